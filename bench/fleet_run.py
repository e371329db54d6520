"""The largest fleet one host holds: N dry-run bots (100 by default) on ``freqfleet up``, for minutes, measured from
outside as a user and an operator would see them; then one emergency stop of them all.

``python -m bench.fleet_run [--bots 100] [--minutes 10] [--pairs 2]`` (``python -m bench.run fleet_run``: 100 bots for
10 minutes; ``--quick``: 10 bots for 1 minute). It starts the whole system with ``freqfleet up`` in a temporary data
dir (embedded PostgreSQL and Valkey, the simulator, the management server with its default workers, the gateway with
the fork launcher, a Celery worker), uploads ``examples/strategies/GreenCandle.py`` as the admin, creates N bots of
``--pairs`` simulator pairs each on 1m (dry run, 2 open trades at most) and starts them all at once over the API.

While they trade, measured every few seconds and reported as percentiles:

- every bot's ``/api/v1/ping`` (Freqtrade's own API; the pids and ports from the gateway's ``GET /api/v1/bots``), all
  bots once per ping round; a ping that fails or takes longer than 5 s counts as 5 s;
- the gateway's ``GET /health/ready`` and the management server's ``GET /api/v1/bots?limit=N`` (the admin's whole
  fleet, as the dashboard asks it);
- the bots' states in that answer (running, anything else), to see that none fell over;
- memory: PSS and USS (``/proc/<pid>/smaps_rollup``) of every bot, of the launcher, and of each service (management,
  gateway, worker, simulator, PostgreSQL, Valkey), and the machine's ``MemAvailable`` against before the start;
- CPU: the machine's busy share over the window, and each part's CPU seconds in it.

Then ``POST /api/v1/emergency-stop`` ``{"scope": "all"}``: the answer's time and outcomes, the gateway's own
time to all paused and to all exited (its log line ``emergency stop done``), and the time until the last bot process
is gone, seen from outside.

Baselines, measured at the same moments on the same host: a bare FastAPI route (``bench._http_server baseline``,
a session of its own as the services have) asked with the gateway's ``/health/ready``, and a bare ``freqtrade
trade`` (no sandbox, no launcher, nice 0: the same strategy, pairs and timeframe) pinged with the bots. Their
latencies are what the machine gives a process at that moment; the rest is ours.

The request rate limits are off (the bench is one admin asking several times a second) and an emergency stop's answer
waits up to 60 s for the gateway's reports. Everything else is ``up``'s default.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench._common import ROOT, BenchError, Server, free_port, own_env, percentile
from bench.fleet_scale import smaps
from shared.bus.messages import BotSpec
from trading_gateway.bots.credentials import ApiCredentials
from trading_gateway.bots.files import BotFiles, render_config
from trading_gateway.bots.process import BotProcess, bot_environment

ADMIN_EMAIL = "admin@fleet-run.example.com"
ADMIN_PASSWORD = "a fleet-run admin password"  # noqa: S105 (a throwaway system's)
STRATEGY = ROOT / "examples" / "strategies" / "GreenCandle.py"
SIMULATOR_PAIRS = (
    "BTC/USDT", "ETH/USDT", "BNB/USDT", "SOL/USDT", "XRP/USDT", "ADA/USDT", "DOGE/USDT", "LTC/USDT", "DOT/USDT",
    "LINK/USDT",
)  # fmt: skip
PING_TIMEOUT = 5.0
PING_EVERY = 10.0  # seconds between two rounds of pings (every bot once per round)
API_EVERY = 1.0  # seconds between two GET /bots, and between two /health/ready
SAMPLE_EVERY = 30.0  # seconds between two reads of memory and states
UP_TIMEOUT = 300.0
START_TIMEOUT = 600.0  # for all N bots to run
MIB = 2**20


@dataclass(frozen=True)
class Plan:
    bots: int
    minutes: float
    pairs: int


FULL = Plan(bots=100, minutes=10.0, pairs=2)
QUICK = Plan(bots=10, minutes=1.0, pairs=2)


@dataclass
class Samples:
    pings: list[float] = field(default_factory=list)
    ping_failures: int = 0
    bare_pings: list[float] = field(default_factory=list)
    ready: list[float] = field(default_factory=list)
    ready_failures: int = 0
    bare_route: list[float] = field(default_factory=list)
    bots_list: list[float] = field(default_factory=list)
    bots_list_failures: int = 0
    states: list[Counter[str]] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)
    weight_1m: list[int] = field(default_factory=list)  # the host's request weight this minute, on the exchange
    exchange: dict[str, Any] = field(default_factory=dict)  # the simulator's statistics and limits over the window


@dataclass
class Up:
    """``freqfleet up`` as a process of its own session, its output (JSON logs) in ``log``."""

    data_dir: Path
    log: Path
    management: str
    gateway: str
    simulator: str
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, root: Path, bots: int, extra: dict[str, str] | None = None) -> Up:
        mport, gport, sport, vport, wport = (free_port() for _ in range(5))
        env = (
            own_env()
            | {
                "FREQFLEET_POSTGRES_PORT": str(free_port()),
                "FREQFLEET_DATA_DIR": str(root / "data"),
                "FREQFLEET_MANAGEMENT_PORT": str(mport),
                "FREQFLEET_GATEWAY_PORT": str(gport),
                "FREQFLEET_SIMULATOR_PORT": str(sport),
                "FREQFLEET_VALKEY_PORT": str(vport),
                "FREQFLEET_WORKER_METRICS_PORT": str(wport),
                "FREQFLEET_ADMIN_EMAIL": ADMIN_EMAIL,
                "FREQFLEET_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "FREQFLEET_MAX_BOTS": str(bots),
                "FREQFLEET_BOT_PORT_RANGE_END": str(18100 + max(199, 2 * bots)),
                "FREQFLEET_RATE_LIMIT_ENABLED": "false",
                "FREQFLEET_EMERGENCY_WAIT_SECONDS": "60",
                "FREQFLEET_LOG_FORMAT": "json",
            }
            | (extra or {})
        )
        up = cls(
            root / "data",
            root / "up.log",
            f"http://127.0.0.1:{mport}",
            f"http://127.0.0.1:{gport}",
            f"http://127.0.0.1:{sport}",
        )
        with up.log.open("wb") as out:
            up.proc = subprocess.Popen(
                [sys.executable, "-m", "freqfleet", "up"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return up

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + UP_TIMEOUT
        async with httpx.AsyncClient(timeout=2.0) as client:
            for url in (self.management, self.gateway):
                while True:
                    if self.proc is None or self.proc.poll() is not None:
                        raise BenchError(f"freqfleet up ended; its log ends with:\n{self.tail()}")
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"{url}/health/ready")).status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise BenchError(f"{url} not ready after {UP_TIMEOUT:g} s; the log ends with:\n{self.tail()}")
                    await asyncio.sleep(0.5)

    def tail(self, size: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-size:]

    def log_lines(self, *events: str) -> list[dict[str, Any]]:
        """The JSON log records whose event is one of ``events``, in the log's order (one read of the log)."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if any(event in line for event in events):
                with contextlib.suppress(ValueError):
                    record = json.loads(line[line.index("{") :])
                    if record.get("event") in events:
                        found.append(record)
        return found

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(180)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


# --- the baselines ------------------------------------------------------------------------------------------------


class BareRoute(Server):
    """A bare FastAPI ``GET /health/live`` in a process and session of its own (as each service has)."""

    new_session = True

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench._http_server", "baseline", "--port", str(self.port)]


async def bare_bot(root: Path, simulator_url: str, pairs: list[str]) -> BotProcess:
    """A bare ``freqtrade trade`` (no sandbox, no launcher, nice 0) with the fleet's strategy, pairs and timeframe."""
    spec = BotSpec(
        name="bare baseline",
        strategy_class="GreenCandle",
        strategy_source=STRATEGY.read_text(),
        pairs=pairs,
        timeframe="1m",
        stake_currency="USDT",
        stake_amount=Decimal(20),
        max_open_trades=2,
        dry_run_wallet=Decimal(1000),
    )
    files = BotFiles(root / "bare", str(uuid.uuid4()))
    config = render_config(
        spec, files, port=free_port(), credentials=ApiCredentials.generate(), simulator_url=simulator_url
    )
    files.write(config, spec.strategy_source)
    process = BotProcess.spawn(files, config, env=bot_environment())
    await process.wait_ready(START_TIMEOUT)
    return process


# --- the fleet ----------------------------------------------------------------------------------------------------


async def admin_client(up: Up) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=f"{up.management}/api/v1", timeout=30.0)
    answer = await client.post("/auth/token", data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    if answer.status_code != 200:
        raise BenchError(f"login answered {answer.status_code}: {answer.text[:200]}")
    client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    return client


async def create_fleet(client: httpx.AsyncClient, plan: Plan) -> list[str]:
    """The strategy uploaded and approved, N bots created; their ids."""
    answer = await client.post("/strategies", json={"name": "green-candle", "source": STRATEGY.read_text()})
    if answer.status_code != 201:
        raise BenchError(f"the upload answered {answer.status_code}: {answer.text[:300]}")
    strategy = answer.json()
    if strategy.get("status") != "approved":
        approved = await client.post(f"/strategies/{strategy['id']}/approve")
        if approved.status_code != 200:
            raise BenchError(f"the approval answered {approved.status_code}: {approved.text[:300]}")
    ids: list[str] = []
    for i in range(plan.bots):
        pairs = [SIMULATOR_PAIRS[(i + k) % len(SIMULATOR_PAIRS)] for k in range(plan.pairs)]
        body = {
            "name": f"fleet-{i:03d}",
            "strategy_id": strategy["id"],
            "pairs": pairs,
            "timeframe": "1m",
            "stake_amount": "20",
            "max_open_trades": 2,
            "dry_run": True,
        }
        created = await client.post("/bots", json=body)
        if created.status_code != 201:
            raise BenchError(f"creating a bot answered {created.status_code}: {created.text[:300]}")
        ids.append(created.json()["id"])
    return ids


async def all_bots(client: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    answer = await client.get("/bots", params={"limit": max(count, 1)})
    answer.raise_for_status()
    bots: list[dict[str, Any]] = answer.json()
    return bots


async def start_fleet(client: httpx.AsyncClient, ids: list[str]) -> tuple[float, float]:
    """Every bot started at once over the API; (seconds until every start was answered, until all run)."""
    t0 = time.perf_counter()
    gate = asyncio.Semaphore(16)

    async def start(bot_id: str) -> None:
        async with gate:
            answer = await client.post(f"/bots/{bot_id}/start")
        if answer.status_code != 200:
            raise BenchError(f"starting a bot answered {answer.status_code}: {answer.text[:300]}")

    await asyncio.gather(*(start(b) for b in ids))
    answered = time.perf_counter() - t0
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        states = Counter(b["actual_state"] for b in await all_bots(client, len(ids)))
        if states["running"] == len(ids):
            return answered, time.perf_counter() - t0
        if time.monotonic() > deadline:
            raise BenchError(f"after {START_TIMEOUT:g} s the bots are {dict(states)}")
        await asyncio.sleep(0.5)


async def gateway_bots(gateway: str, token: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        answer = await client.get(f"{gateway}/api/v1/bots", headers={"Authorization": f"Bearer {token}"})
    answer.raise_for_status()
    bots: list[dict[str, Any]] = answer.json()["bots"]
    return bots


# --- what runs, and what it costs ---------------------------------------------------------------------------------


SERVICES = (
    ("freqfleet management", "management"),
    ("freqfleet gateway", "gateway"),
    ("freqfleet worker", "worker"),
    ("celery", "worker"),  # the worker's processes name themselves
    ("freqfleet simulator", "simulator"),
    ("postgres", "postgresql"),
    ("valkey", "valkey"),
)


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def our_processes(up: Up, bot_pids: set[int]) -> dict[str, list[psutil.Process]]:
    """Every process of the system by part: each child of ``up`` with its descendants (a service's workers, the
    gateway's launchers and their bots), and a PostgreSQL of ``up``'s data dir that left the tree, with its
    backends."""
    assert up.proc is not None
    root = psutil.Process(up.proc.pid)
    parts: dict[str, list[psutil.Process]] = {"up": [root]}
    seen = {root.pid}
    tops = [(child, _cmdline(child)) for child in root.children()]
    tops += [
        (proc, line)
        for proc in psutil.process_iter()
        if proc.pid not in {c.pid for c, _ in tops} and str(up.data_dir) in (line := _cmdline(proc))
    ]
    for top, line in tops:
        service = next((name for needle, name in SERVICES if needle in line), "other")
        with contextlib.suppress(psutil.Error):
            for proc in [top, *top.children(recursive=True)]:
                if proc.pid in seen:
                    continue
                seen.add(proc.pid)
                part = service
                if proc.pid in bot_pids:
                    part = "bots"
                elif service == "gateway" and "shared.launcher" in _cmdline(proc):
                    part = "launcher"
                parts.setdefault(part, []).append(proc)
    return parts


def memory_now(up: Up, bot_pids: set[int]) -> dict[str, Any]:
    by_part: dict[str, dict[str, int]] = {}
    per_bot_pss: list[int] = []
    per_bot_uss: list[int] = []
    for part, procs in our_processes(up, bot_pids).items():
        total = by_part.setdefault(part, {"pss": 0, "uss": 0, "rss": 0, "count": 0})
        for proc in procs:
            try:
                rollup = smaps(proc.pid)
            except OSError:
                continue
            uss = rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)
            total["pss"] += rollup.get("Pss", 0)
            total["uss"] += uss
            total["rss"] += rollup.get("Rss", 0)
            total["count"] += 1
            if part == "bots":
                per_bot_pss.append(rollup.get("Pss", 0))
                per_bot_uss.append(uss)
    return {
        "parts": by_part,
        "per_bot_pss": per_bot_pss,
        "per_bot_uss": per_bot_uss,
        "available": psutil.virtual_memory().available,
    }


def cpu_seconds(up: Up, bot_pids: set[int]) -> dict[str, float]:
    spent: dict[str, float] = {}
    for part, procs in our_processes(up, bot_pids).items():
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                spent[part] = spent.get(part, 0.0) + t.user + t.system
    return spent


# --- the window ---------------------------------------------------------------------------------------------------


async def every(seconds: float, until: float, action: Callable[[], Awaitable[None]]) -> None:
    next_at = time.monotonic()
    while next_at < until:
        await action()
        next_at += seconds
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def timed_get(client: httpx.AsyncClient, url: str, **kwargs: Any) -> tuple[float, httpx.Response | None]:
    t0 = time.perf_counter()
    try:
        answer = await client.get(url, **kwargs)
    except httpx.HTTPError:
        return time.perf_counter() - t0, None
    return time.perf_counter() - t0, answer


async def window(
    up: Up, admin: httpx.AsyncClient, plan: Plan, ports: dict[int, int], bare_port: int, bare_route: str
) -> Samples:
    samples = Samples()
    until = time.monotonic() + plan.minutes * 60
    bot_pids = set(ports)

    async def ping_round() -> None:
        gate = asyncio.Semaphore(25)
        async with httpx.AsyncClient(timeout=PING_TIMEOUT) as client:

            async def ping(port: int, into: list[float]) -> None:
                async with gate:
                    seconds, answer = await timed_get(client, f"http://127.0.0.1:{port}/api/v1/ping")
                if answer is None or answer.status_code != 200:
                    samples.ping_failures += 1
                    seconds = PING_TIMEOUT
                into.append(seconds)

            await asyncio.gather(*(ping(p, samples.pings) for p in ports.values()), ping(bare_port, samples.bare_pings))

    async with httpx.AsyncClient(timeout=10.0) as plain:

        async def ready() -> None:
            (seconds, answer), (bare, _) = await asyncio.gather(
                timed_get(plain, f"{up.gateway}/health/ready"), timed_get(plain, f"{bare_route}/health/live")
            )
            samples.ready.append(seconds)
            samples.ready_failures += answer is None or answer.status_code != 200
            samples.bare_route.append(bare)

        async def bots_list() -> None:
            seconds, answer = await timed_get(admin, "/bots", params={"limit": plan.bots})
            samples.bots_list.append(seconds)
            if answer is None or answer.status_code != 200:
                samples.bots_list_failures += 1

        async def sample() -> None:
            bots = await all_bots(admin, plan.bots)
            samples.states.append(Counter(b["actual_state"] for b in bots))
            samples.memory.append(await asyncio.to_thread(memory_now, up, bot_pids))
            limits = (await plain.get(f"{up.simulator}/_sim/limits")).json()
            samples.weight_1m.append(max((ip["used_weight_1m"] for ip in limits["ips"].values()), default=0))

        (await plain.delete(f"{up.simulator}/_sim/stats")).raise_for_status()
        await asyncio.gather(
            every(PING_EVERY, until, ping_round),
            every(API_EVERY, until, ready),
            every(API_EVERY, until, bots_list),
            every(SAMPLE_EVERY, until, sample),
        )
        samples.exchange = {
            "stats": (await plain.get(f"{up.simulator}/_sim/stats")).json(),
            "limits": (await plain.get(f"{up.simulator}/_sim/limits")).json(),
        }
    return samples


async def emergency_stop(up: Up, admin: httpx.AsyncClient, pids: set[int]) -> dict[str, Any]:
    """One emergency stop of all; its answer, and when the last bot process was gone (seen from outside)."""

    def alive(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    async def gone() -> float:
        t0 = time.perf_counter()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not any(alive(p) for p in pids):
                return time.perf_counter() - t0
            await asyncio.sleep(0.05)
        return float("nan")

    before = len(up.log_lines("emergency stop done"))
    t0 = time.perf_counter()
    watch = asyncio.create_task(gone())
    answer = await admin.post("/emergency-stop", json={"scope": "all", "reason": "fleet benchmark"}, timeout=120)
    answered = time.perf_counter() - t0
    exited_outside = await watch
    if answer.status_code != 200:
        raise BenchError(f"the emergency stop answered {answer.status_code}: {answer.text[:300]}")
    body = answer.json()
    deadline = time.monotonic() + 60
    while len(done := up.log_lines("emergency stop done")) <= before and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)  # (a log file: nothing to wait on)
    gateway = done[-1] if len(done) > before else {}
    return {
        "answered": answered,
        "completed": body.get("completed"),
        "outcomes": Counter(r["outcome"] for r in body.get("results", [])),
        "exited_outside": exited_outside,
        "gateway_paused": gateway.get("seconds_to_all_paused"),
        "gateway_exited": gateway.get("seconds_to_all_exited"),
        "gateway_seconds": gateway.get("seconds"),
    }


# --- the run ------------------------------------------------------------------------------------------------------


NOTABLE = (  # what the services log when a bot or a launcher did not go as planned
    "bot process ended unexpectedly",
    "bot crashed; restarting it",
    "ending a bot that does not work",
    "bot failed",
    "bot launcher gone; starting another",
    "bot launch through the fork launcher failed; exec'ing it",
)
KEPT_LOG = Path(tempfile.gettempdir()) / "freqfleet-fleet-run.log"  # the last run's whole log, kept for a look


def notable(up: Up) -> list[dict[str, Any]]:
    return up.log_lines(*NOTABLE)


@dataclass
class Outcome:
    plan: Plan
    launchers: Counter[str]
    started_answered: float
    started_running: float
    samples: Samples
    cpu: dict[str, float]
    cpu_window: float
    machine_busy: float
    available_before: int
    stop: dict[str, Any]
    events: list[dict[str, Any]]


async def measure(plan: Plan) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="freqfleet-bench-fleet-run-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # noqa: S103 (the data dir in it is private; bots of other uids traverse to theirs)
        available_before = psutil.virtual_memory().available
        up = Up.start(root, plan.bots)
        route = BareRoute("bare-route", root)
        bare: BotProcess | None = None
        try:
            route.start()
            await route.wait_started()
            await up.wait_ready()
            bare = await bare_bot(root, up.simulator, list(SIMULATOR_PAIRS[: plan.pairs]))
            print(f"freqfleet up ready; creating {plan.bots} bots", flush=True)
            admin = await admin_client(up)
            try:
                ids = await create_fleet(admin, plan)
                answered, running = await start_fleet(admin, ids)
                print(f"{plan.bots} bots running after {running:.1f} s", flush=True)
                token = admin.headers["Authorization"].removeprefix("Bearer ")
                on_gateway = await gateway_bots(up.gateway, token)
                ports = {b["pid"]: b["port"] for b in on_gateway if b.get("pid") and b.get("port")}
                if len(ports) != plan.bots:
                    raise BenchError(f"the gateway lists {len(ports)} bot processes, not {plan.bots}")
                launchers = Counter(b["launcher"] for b in await all_bots(admin, plan.bots))
                cpu_before = await asyncio.to_thread(cpu_seconds, up, set(ports))
                machine_before = psutil.cpu_times()
                t0 = time.monotonic()
                samples = await window(up, admin, plan, ports, bare.port, route.url)
                cpu_window = time.monotonic() - t0
                cpu_after = await asyncio.to_thread(cpu_seconds, up, set(ports))
                machine_after = psutil.cpu_times()
                busy = _busy(machine_after) - _busy(machine_before)
                total = sum(machine_after) - sum(machine_before)
                events = notable(up)  # before the emergency stop, which ends every bot on purpose
                stop = await emergency_stop(up, admin, set(ports))
            finally:
                await admin.aclose()
            return Outcome(
                plan=plan,
                launchers=launchers,
                started_answered=answered,
                started_running=running,
                samples=samples,
                cpu={part: cpu_after.get(part, 0.0) - cpu_before.get(part, 0.0) for part in cpu_after},
                cpu_window=cpu_window,
                machine_busy=busy / total if total else float("nan"),
                available_before=available_before,
                stop=stop,
                events=events,
            )
        finally:
            if bare is not None:
                await bare.stop(grace=15)
            route.stop()
            up.stop()
            with contextlib.suppress(OSError):
                KEPT_LOG.write_bytes(up.log.read_bytes())


def _busy(times: Any) -> float:
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def report(o: Outcome) -> str:
    s = o.samples

    def pct(values: list[float]) -> str:
        ordered = sorted(values)
        if not ordered:
            return "no samples"
        return (
            f"p50 {percentile(ordered, 50) * 1000:7.1f} ms  p99 {percentile(ordered, 99) * 1000:7.1f} ms  "
            f"max {ordered[-1] * 1000:7.1f} ms  ({len(ordered)} samples)"
        )

    last: dict[str, Any] = (
        s.memory[-1] if s.memory else {"parts": {}, "per_bot_pss": [], "per_bot_uss": [], "available": 0}
    )
    parts = last["parts"]
    total_pss = sum(p["pss"] for p in parts.values())
    worst = Counter[str]()
    for states in s.states:
        for state, n in states.items():
            if state != "running":
                worst[state] = max(worst[state], n)
    lines = [
        f"{o.plan.bots} bots x {o.plan.pairs} pairs x 1m (GreenCandle, dry run), {o.plan.minutes:g} minutes; "
        f"launched by {dict(o.launchers)}; {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        f"  start: every start answered after {o.started_answered:.1f} s, all running after {o.started_running:.1f} s",
        f"  bot /api/v1/ping               {pct(s.pings)}  failures {s.ping_failures}",
        f"    baseline: bare freqtrade     {pct(s.bare_pings)}",
        f"  gateway GET /health/ready      {pct(s.ready)}  failures {s.ready_failures}",
        f"    baseline: bare FastAPI route {pct(s.bare_route)}",
        f"  management GET /api/v1/bots    {pct(s.bots_list)}  failures {s.bots_list_failures}",
        f"  states other than running at any sample: {dict(worst) or 'none'}",
        f"  memory at the end: whole system PSS {total_pss / MIB:,.0f} MiB; MemAvailable fell by "
        f"{(o.available_before - last['available']) / MIB:,.0f} MiB",
    ]
    if last["per_bot_pss"]:
        launcher_pss = parts.get("launcher", {}).get("pss", 0)
        per_bot = statistics.median(last["per_bot_pss"]) + launcher_pss / len(last["per_bot_pss"])
        lines.append(
            f"    per bot: USS {statistics.median(last['per_bot_uss']) / MIB:.0f} MiB, PSS "
            f"{statistics.median(last['per_bot_pss']) / MIB:.0f} MiB (+ launcher share: {per_bot / MIB:.0f} MiB)"
        )
    for part, p in sorted(parts.items(), key=lambda kv: -kv[1]["pss"]):
        lines.append(
            f"    {part:<11} {p['count']:>4} proc  PSS {p['pss'] / MIB:>8,.0f} MiB  USS {p['uss'] / MIB:>8,.0f} MiB"
        )
    if s.exchange:
        stats, limits = s.exchange["stats"], s.exchange["limits"]
        minutes = o.plan.minutes or 1.0
        busiest = sorted(stats["endpoints"].items(), key=lambda kv: -kv[1]["count"])[:4]
        by_endpoint = ", ".join(f"{path.rsplit('/v3/', 1)[-1]} {e['count'] / minutes:,.0f}" for path, e in busiest)
        limit = limits["weight_per_minute"] or "no limit"
        lines += [
            f"  the exchange (simulator): {stats['total'] / minutes:,.0f} requests a minute from this host "
            f"({by_endpoint});",
            f"    the host's weight in a minute up to {max(s.weight_1m, default=0):,} of {limit}; "
            f"429s {limits['requests_429']}, 418s {limits['requests_418']}",
        ]
    lines.append(f"  CPU over the window: machine busy {o.machine_busy:.0%} of {os.cpu_count()} cores; by part:")
    for part, seconds in sorted(o.cpu.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {part:<11} {seconds / o.cpu_window:5.2f}  ({seconds:,.0f} CPU s)")
    kinds = Counter(str(e.get("event")) for e in o.events)
    lines.append(f"  bots or launchers off plan in the window: {dict(kinds) or 'none'} (the whole log: {KEPT_LOG})")
    for event in o.events[:5]:
        fields = ("timestamp", "event", "bot_id", "reason", "exit_code")
        lines.append("    " + json.dumps({k: event.get(k) for k in fields}))
    st = o.stop
    lines += [
        f"  emergency stop of all: answered after {st['answered']:.2f} s (completed: {st['completed']}, "
        f"outcomes {dict(st['outcomes'])})",
        f"    gateway: all paused after {st['gateway_paused']} s, all exited after {st['gateway_exited']} s; "
        f"last bot process gone (seen from outside) after {st['exited_outside']:.2f} s",
    ]
    return "\n".join(lines)


def run(quick: bool, plan: Plan | None = None) -> None:
    chosen = plan or (QUICK if quick else FULL)
    print(report(asyncio.run(measure(chosen))), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK.bots} bots for {QUICK.minutes:g} minute")
    parser.add_argument("--bots", type=int)
    parser.add_argument("--minutes", type=float)
    parser.add_argument("--pairs", type=int)
    args = parser.parse_args()
    base = QUICK if args.quick else FULL
    run(
        args.quick,
        Plan(
            bots=args.bots or base.bots,
            minutes=args.minutes or base.minutes,
            pairs=args.pairs or base.pairs,
        ),
    )
