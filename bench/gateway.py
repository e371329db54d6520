"""The trading gateway with N real Freqtrade bots, beside N bare ``freqtrade trade`` processes.

Everything runs on this machine: an embedded Valkey, ``freqfleet simulator`` (the exchange the bots
trade on) and ``freqfleet gateway`` as its own process, with its production defaults (status read
every 5 s, Freqtrade's throttle 5 s, JSON logs at INFO to a file). Per size N, in one run:

1. **Baseline, bare**: N bots' configs rendered by our code (``render_config``, the same spec, fresh
   ports and credentials), each spawned directly with the gateway's command line and environment
   (``freqtrade trade --config ... --strategy ...``, own session, output to a file), all at once; the
   time until every one answers ``/api/v1/ping``. Then, once each has an open trade (filled), a bare
   emergency stop from this process, all bots in parallel: ``stopentry`` (paused), ``forceexit all``,
   wait for the trades to close, ``stop``, SIGTERM to the group, wait for the exit.
2. **Ours, through the gateway**: N START_BOT commands published at once on the gateway's command
   stream, as the management server sends them; the time until every BOT_STARTED is seen on
   ``freqfleet:events`` (the gateway sends it once ``/ping`` answers and ``show_config`` proves the
   bot's identity). Then a fixed window with the N bots running: the gateway process's CPU time and
   RSS growth, per supervised bot, against the bots' own CPU and RSS (child processes included).
   Then, once each bot has reported a filled trade (TRADE_OPENED), one EMERGENCY_STOP for the N bots:
   times to all paused (from the gateway's EMERGENCY_STOP_COMPLETED, put on the bench's clock) and to
   all exited (the bench watches the bots' pids), both from the moment the command was published.

Bots trade one pair each (AlwaysEnter with market orders: an entry fills at once). The bare bots run
before the gateway's, never at the same time. On 2 cores, starting N bots at once is bound by CPU
(Freqtrade's imports take about 2 s of CPU each): start times grow with N for both sides alike.

    python -m bench.run gateway [--quick]     (or: python -m bench.gateway [--quick])
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import psutil
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench._common import free_port, free_range, own_env
from exchange_simulator.config import DEFAULT_PAIRS
from freqfleet.embedded import EmbeddedValkey
from management_server.security.keys import KeyRing, SigningKey
from shared.bus.messages import (
    BotRef,
    BotSpec,
    BotStarted,
    CommandAccepted,
    CommandRejected,
    EmergencyScope,
    EmergencyStop,
    EmergencyStopCompleted,
    EmergencyStopData,
    Envelope,
    StartBot,
    StartBotData,
    TradeOpened,
    decode,
)
from shared.bus.publisher import Publisher
from shared.bus.signing import CommandSigner
from shared.bus.streams import EVENTS_STREAM, commands_stream
from trading_gateway.bots.adoption import find_orphans
from trading_gateway.bots.credentials import ApiCredentials
from trading_gateway.bots.files import BotFiles, render_config
from trading_gateway.bots.process import bot_environment, default_executable
from trading_gateway.bus.signatures import COMMAND_KEYS_CACHE

T = TypeVar("T")
GATEWAY_ID = "gw-bench"
START_TIMEOUT = 240.0  # seconds for N bots to start at once on 2 cores
TRADE_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
POLL = 0.1  # as the gateway polls a starting bot's /ping
BOT_MEMORY_GUESS = 400 * 1024 * 1024  # bytes per bot when checking that a size fits (an idle bot is ~320 MiB)
STRATEGY_CLASS = "AlwaysEnterMarket"
STRATEGY_SOURCE = '''"""Enters on every candle with a market order (fills at once); never exits by itself."""

from typing import ClassVar

from freqtrade.strategy import IStrategy
from pandas import DataFrame


class AlwaysEnterMarket(IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "1m"
    can_short = False
    minimal_roi: ClassVar[dict[str, float]] = {"0": 100.0}
    stoploss = -0.5
    process_only_new_candles = False
    startup_candle_count = 0
    order_types: ClassVar[dict[str, object]] = {
        "entry": "market", "exit": "market", "stoploss": "market", "stoploss_on_exchange": False
    }

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["enter_long"] = 1
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["exit_long"] = 0
        return dataframe
'''


@dataclass(frozen=True)
class Profile:
    sizes: tuple[int, ...]
    window: float  # seconds the N bots run under the gateway while its CPU is measured
    idle_window: float  # seconds of the gateway without running bots, its own floor


FULL = Profile(sizes=(10, 20), window=30.0, idle_window=10.0)
QUICK = Profile(sizes=(5,), window=6.0, idle_window=3.0)


def spec_for(i: int) -> BotSpec:
    return BotSpec(
        name=f"bench bot {i}",
        strategy_class=STRATEGY_CLASS,
        strategy_source=STRATEGY_SOURCE,
        pairs=[DEFAULT_PAIRS[i % len(DEFAULT_PAIRS)]],
        timeframe="1m",
        stake_currency="USDT",
        stake_amount=Decimal(100),
        max_open_trades=1,
        dry_run_wallet=Decimal(10_000),
        stoploss=-0.3,
    )


async def wait_until(check: Callable[[], Awaitable[T | None]], timeout: float, what: str, every: float = POLL) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(every)


# ---------------------------------------------------------------------------------------------- processes


@dataclass
class Usage:
    """CPU seconds (user + system) and RSS of a set of processes (their children included, or not)."""

    cpu: float
    rss: int


def usage(pids: Sequence[int], *, children: bool = True) -> Usage:
    cpu, rss = 0.0, 0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in [root, *(root.children(recursive=True) if children else [])]:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    cpu += times.user + times.system
                    rss += proc.memory_info().rss
        except psutil.Error:
            continue
    return Usage(cpu, rss)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


COMMAND_KEYS = KeyRing([SigningKey.of(Ed25519PrivateKey.generate())])


def command_publisher(redis: aioredis.Redis) -> Publisher:
    """Publishes commands signed as the management server's outbox relay signs them."""
    return Publisher(redis, signer=CommandSigner(COMMAND_KEYS.active.private, COMMAND_KEYS.active.kid))


@dataclass
class Stack:
    """Valkey, the simulator and the gateway, each its own process, in a temporary folder."""

    root: Path
    valkey: EmbeddedValkey | None = None
    simulator: subprocess.Popen[bytes] | None = None
    gateway: subprocess.Popen[bytes] | None = None
    simulator_url: str = ""
    gateway_url: str = ""
    redis_url: str = ""
    bare_ports: int = 0  # the first port of the bare bots (after the gateway's range)
    logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def gateway_bots(self) -> Path:
        return self.root / "data" / "gateway" / GATEWAY_ID / "bots"

    @property
    def bare_bots(self) -> Path:
        return self.root / "bare"

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        return own_env() | {"FREQFLEET_LOG_FORMAT": "json", "FREQFLEET_LOG_LEVEL": "INFO"} | extra

    def _spawn(self, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = (self.root / f"{name}.log").open("wb")
        self.logs.append(out)
        return subprocess.Popen(
            [sys.executable, "-m", "freqfleet", name],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(
        self, max_bots: int, gateway_env: dict[str, str] | None = None, simulator_env: dict[str, str] | None = None
    ) -> None:
        self.valkey = EmbeddedValkey(self.root / "valkey", free_port())
        self.valkey.start()
        self.redis_url = self.valkey.url
        sim_port = free_port()
        self.simulator_url = f"http://127.0.0.1:{sim_port}"
        self.simulator = self._spawn(
            "simulator", self._env({"FREQFLEET_SIMULATOR_PORT": str(sim_port), **(simulator_env or {})})
        )
        self._wait_http(f"{self.simulator_url}/_sim/health", self.simulator, "the simulator")
        gw_port = free_port()
        first = free_range(2 * max_bots + 20)
        # The gateway verifies every command with the management server's keys; there is none here, so the
        # bench's own key is put where the gateway keeps its copy of them.
        keys_copy = self.root / "data" / "gateway" / GATEWAY_ID / COMMAND_KEYS_CACHE
        keys_copy.parent.mkdir(parents=True, exist_ok=True)
        keys_copy.write_text(json.dumps(COMMAND_KEYS.jwks()))
        self.gateway_url = f"http://127.0.0.1:{gw_port}"
        self.gateway = self._spawn(
            "gateway",
            self._env(
                {
                    "FREQFLEET_DATA_DIR": str(self.root / "data"),
                    "FREQFLEET_REDIS_URL": self.redis_url,
                    "FREQFLEET_GATEWAY_ID": GATEWAY_ID,
                    "FREQFLEET_GATEWAY_PORT": str(gw_port),
                    "FREQFLEET_SIMULATOR_URL": self.simulator_url,
                    "FREQFLEET_MANAGEMENT_URL": f"http://127.0.0.1:{free_port()}",  # no JWKS: not needed here
                    "FREQFLEET_MAX_BOTS": str(max_bots),
                    "FREQFLEET_BOT_PORT_RANGE_START": str(first),
                    "FREQFLEET_BOT_PORT_RANGE_END": str(first + max_bots + 9),
                    "FREQFLEET_STOP_BOTS_ON_SHUTDOWN": "true",
                    **(gateway_env or {}),
                }
            ),
        )
        self.bare_ports = first + max_bots + 10
        self._wait_http(f"{self.gateway_url}/health/ready", self.gateway, "the gateway")

    def _wait_http(self, url: str, proc: subprocess.Popen[bytes], what: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with code {proc.returncode}; see {self.root}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{what} did not answer within 60 s")

    def stop(self) -> None:
        for proc in (self.gateway, self.simulator):
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                kill_group(proc.pid)
                proc.wait(5)
        for folder in (self.gateway_bots, self.bare_bots):  # whatever a failed run left behind
            for orphan in find_orphans(folder):
                kill_group(orphan.pid)
        if self.valkey is not None:
            self.valkey.stop()
        for out in self.logs:
            out.close()


class Events:
    """``freqfleet:events`` read as it grows; each event with the bench's monotonic time when it was seen."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.last = "0-0"
        self.seen: list[tuple[float, Envelope]] = []

    async def pull(self) -> None:
        answer: Any = await self.redis.xread({EVENTS_STREAM: self.last}, count=1000, block=50)
        now = time.monotonic()
        for _, entries in answer or []:
            for entry_id, fields in entries:
                self.last = entry_id.decode()
                self.seen.append((now, decode(fields[b"envelope"])))

    async def wait_all(
        self, kind: type[Envelope], ids: set[uuid.UUID], timeout: float, key: Callable[[Any], uuid.UUID]
    ) -> dict[uuid.UUID, tuple[float, Any]]:
        """The first event of ``kind`` for each id in ``ids``: (seen at, event)."""
        found: dict[uuid.UUID, tuple[float, Any]] = {}
        deadline = time.monotonic() + timeout
        while True:
            for at, event in self.seen:
                if isinstance(event, kind) and key(event) in ids and key(event) not in found:
                    found[key(event)] = (at, event)
            if len(found) == len(ids):
                return found
            rejected = [e for _, e in self.seen if isinstance(e, CommandRejected) and e.data.bot_id in ids]
            if rejected:
                raise RuntimeError(f"a command was rejected: {rejected[0].data.reason}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)} of {len(ids)} {kind.__name__} within {timeout:g} s")
            await self.pull()


# ---------------------------------------------------------------------------------------------- bare bots


@dataclass
class BareBot:
    files: BotFiles
    port: int
    credentials: ApiCredentials
    popen: subprocess.Popen[bytes] | None = None

    def auth(self) -> httpx.BasicAuth:
        return httpx.BasicAuth(self.credentials.username, self.credentials.password)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"


@dataclass
class BareFigures:
    started: float  # spawn of the first to the last /ping answered
    paused: float  # emergency begun to every stopentry answered
    exited: float  # emergency begun to every process gone
    trades_closed: int


def spawn_bare(bot: BareBot, spec: BotSpec, simulator_url: str) -> None:
    """What ``BotProcess.spawn`` runs, without the gateway around it."""
    config = render_config(spec, bot.files, port=bot.port, credentials=bot.credentials, simulator_url=simulator_url)
    bot.files.write(config, spec.strategy_source)
    files = bot.files
    argv = [str(default_executable()), "trade", "--config", str(files.config), "--userdir", str(files.user_data)]
    argv += ["--strategy", config.strategy_class, "--strategy-path", str(files.strategies)]
    argv += ["--db-url", config.db_url, "--logfile", str(files.log)]
    with bot.files.console_log.open("ab") as console:
        bot.popen = subprocess.Popen(
            argv,
            cwd=bot.files.folder,
            env=bot_environment(),
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


async def bare_round(stack: Stack, n: int) -> BareFigures:
    bots = [
        BareBot(BotFiles(stack.bare_bots, str(uuid.uuid4())), stack.bare_ports + i, ApiCredentials.generate())
        for i in range(n)
    ]
    for bot in bots:
        bot.files.prepare()
    async with httpx.AsyncClient(timeout=5) as http:
        t0 = time.monotonic()
        for i, bot in enumerate(bots):
            spawn_bare(bot, spec_for(i), stack.simulator_url)

        async def ping(bot: BareBot) -> float:
            async def answers() -> bool:
                assert bot.popen is not None
                if bot.popen.poll() is not None:
                    raise RuntimeError(f"bare bot exited with {bot.popen.returncode}; see {bot.files.console_log}")
                with contextlib.suppress(httpx.HTTPError):
                    return (await http.get(f"{bot.url}/ping")).status_code == 200
                return False

            await wait_until(answers, START_TIMEOUT, "a bare bot's /ping")
            return time.monotonic() - t0

        started = max(await asyncio.gather(*(ping(b) for b in bots)))

        async def open_trade(bot: BareBot) -> None:
            async def filled() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    trades = (await http.get(f"{bot.url}/status", auth=bot.auth())).json()
                    return len(trades) == 1 and trades[0]["nr_of_successful_entries"] > 0
                return False

            await wait_until(filled, TRADE_TIMEOUT, "a bare bot's filled trade", every=0.5)

        await asyncio.gather(*(open_trade(b) for b in bots))

        t1 = time.monotonic()

        async def emergency(bot: BareBot) -> tuple[float, float, int]:
            auth = bot.auth()
            (await http.post(f"{bot.url}/stopentry", auth=auth)).raise_for_status()
            paused = time.monotonic() - t1
            before = len((await http.get(f"{bot.url}/status", auth=auth)).json())
            await http.post(f"{bot.url}/forceexit", json={"tradeid": "all", "ordertype": "market"}, auth=auth)

            async def closed() -> bool:
                return not (await http.get(f"{bot.url}/status", auth=auth)).json()

            await wait_until(closed, 10, "the trades to close", every=0.2)
            await http.post(f"{bot.url}/stop", auth=auth)
            assert bot.popen is not None
            os.killpg(bot.popen.pid, signal.SIGTERM)
            while bot.popen.poll() is None:  # noqa: ASYNC110 - a Popen has nothing to await
                await asyncio.sleep(0.02)
            return paused, time.monotonic() - t1, before

        results = await asyncio.gather(*(emergency(b) for b in bots))
    return BareFigures(
        started=started,
        paused=max(r[0] for r in results),
        exited=max(r[1] for r in results),
        trades_closed=sum(r[2] for r in results),
    )


# ---------------------------------------------------------------------------------------------- gateway


@dataclass
class GatewayFigures:
    started: float  # first START_BOT published to the last BOT_STARTED seen
    window: float
    gateway_cpu: float  # CPU seconds of the gateway process over the window
    idle_cpu: float  # ... with no bot running, per second
    gateway_rss_growth: int  # RSS at the end of the window less RSS before the START commands
    gateway_rss: int
    bots_cpu: float  # CPU seconds of all N bots over the window
    bots_rss: int
    picked_up: float  # EMERGENCY_STOP published to its COMMAND_ACCEPTED (gateway clock)
    paused: float  # published to all paused (the gateway's figure on the bench's clock)
    paused_in_gateway: float  # the emergency begun (in the gateway) to all paused
    exited_reported: float  # published to all exited, as the gateway reported it
    exited: float  # published to every pid gone, as the bench saw it
    completed: float  # published to EMERGENCY_STOP_COMPLETED seen on the bus
    trades_closed: int
    outcomes: dict[str, int]


def wall_to_monotonic(moment: datetime) -> float:
    """A wall-clock moment (an event's ``occurred_at``, stamped on this machine) on the monotonic clock."""
    return time.monotonic() - (time.time() - moment.timestamp())


async def gateway_round(stack: Stack, n: int, profile: Profile, events: Events, publisher: Publisher) -> GatewayFigures:
    assert stack.gateway is not None
    gw = psutil.Process(stack.gateway.pid)
    await events.pull()
    idle0 = usage([gw.pid], children=False)
    await asyncio.sleep(profile.idle_window)  # the gateway with no bot running: heartbeat, consumer
    idle_cpu = (usage([gw.pid], children=False).cpu - idle0.cpu) / profile.idle_window
    rss_before = gw.memory_info().rss

    ids = [uuid.uuid4() for _ in range(n)]
    commands = [
        StartBot(source="management", data=StartBotData(bot_id=b, generation=1, spec=spec_for(i)))
        for i, b in enumerate(ids)
    ]
    stream = commands_stream(GATEWAY_ID)
    t0 = time.monotonic()
    for command in commands:
        await publisher.publish(stream, command)
    started = await events.wait_all(BotStarted, set(ids), START_TIMEOUT, key=lambda e: e.data.bot_id)
    started_s = max(at for at, _ in started.values()) - t0
    pids = [event.data.pid for _, event in started.values()]

    # The N bots run under the gateway for a fixed window (it reads each one's status every 5 s).
    g0, b0 = usage([gw.pid], children=False), usage(pids)
    w0 = time.monotonic()
    while time.monotonic() - w0 < profile.window:
        await events.pull()
        await asyncio.sleep(0.5)
    window = time.monotonic() - w0
    g1, b1 = usage([gw.pid], children=False), usage(pids)

    await events.wait_all(TradeOpened, set(ids), TRADE_TIMEOUT, key=lambda e: e.data.bot_id)
    halt = EmergencyStop(
        source="management",
        data=EmergencyStopData(
            scope=EmergencyScope.bots, bots=[BotRef(bot_id=b, generation=2) for b in ids], requested_by="bench"
        ),
    )
    published = time.monotonic()
    await publisher.publish(stream, halt)
    exited_at = published
    remaining = set(pids)
    while remaining:  # the bench's own view of the processes ending
        remaining = {p for p in remaining if alive(p)}
        exited_at = time.monotonic()
        if exited_at - published > STOP_TIMEOUT:
            raise TimeoutError(f"{len(remaining)} bot processes still run {STOP_TIMEOUT:g} s after EMERGENCY_STOP")
        await asyncio.sleep(0.01)
    key: Callable[[Any], uuid.UUID] = lambda e: e.data.command_id  # noqa: E731
    done = await events.wait_all(EmergencyStopCompleted, {halt.event_id}, STOP_TIMEOUT, key=key)
    accepted = await events.wait_all(CommandAccepted, {halt.event_id}, STOP_TIMEOUT, key=key)
    seen_at, completed = done[halt.event_id]
    data = completed.data
    if data.seconds_to_all_paused is None or data.seconds_to_all_exited is None:
        raise RuntimeError(f"the emergency stop did not pause or end every bot: {data.results}")
    begun = wall_to_monotonic(completed.occurred_at) - data.seconds  # the gateway's t0 on the bench's clock
    outcomes: dict[str, int] = {}
    for result in data.results:
        outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
    return GatewayFigures(
        started=started_s,
        window=window,
        gateway_cpu=g1.cpu - g0.cpu,
        idle_cpu=idle_cpu,
        gateway_rss_growth=g1.rss - rss_before,
        gateway_rss=g1.rss,
        bots_cpu=b1.cpu - b0.cpu,
        bots_rss=b1.rss,
        picked_up=wall_to_monotonic(accepted[halt.event_id][1].occurred_at) - published,
        paused=begun + data.seconds_to_all_paused - published,
        paused_in_gateway=data.seconds_to_all_paused,
        exited_reported=begun + data.seconds_to_all_exited - published,
        exited=exited_at - published,
        completed=seen_at - published,
        trades_closed=sum(r.trades_closed for r in data.results),
        outcomes=outcomes,
    )


# ---------------------------------------------------------------------------------------------- report


MIB = 1024 * 1024


def report(n: int, bare: BareFigures, ours: GatewayFigures) -> str:
    per_bot_cpu = (ours.gateway_cpu / ours.window - ours.idle_cpu) / n * 100  # % of a core
    bot_cpu = ours.bots_cpu / ours.window / n * 100
    per_bot_rss = ours.gateway_rss_growth / n / MIB
    bot_rss = ours.bots_rss / n / MIB
    lines = [
        f"  N = {n} bots",
        f"  {'':<44} {'bare':>9} {'gateway':>9} {'gw/bare':>8}",
        f"  {'start at once, all answering (s)':<44} {bare.started:>9.2f} {ours.started:>9.2f} "
        f"{ours.started / bare.started:>8.2f}",
        f"  {'emergency stop: all paused (s)':<44} {bare.paused:>9.2f} {ours.paused:>9.2f} "
        f"{ours.paused / bare.paused:>8.2f}",
        f"  {'emergency stop: all exited (s)':<44} {bare.exited:>9.2f} {ours.exited:>9.2f} "
        f"{ours.exited / bare.exited:>8.2f}",
        f"  {'emergency stop: trades closed':<44} {bare.trades_closed:>9} {ours.trades_closed:>9}",
        f"  gateway emergency: command picked up {ours.picked_up:.3f} s after publishing; all paused "
        f"{ours.paused:.2f} s ({ours.paused_in_gateway:.2f} s in the gateway), all exited {ours.exited_reported:.2f} s "
        f"(gateway's figures from publishing), EMERGENCY_STOP_COMPLETED seen {ours.completed:.2f} s; "
        f"outcomes {ours.outcomes}",
        f"  gateway while supervising for {ours.window:.0f} s: CPU {ours.gateway_cpu / ours.window * 100:.2f} % "
        f"of a core ({ours.idle_cpu * 100:.2f} % with no bot running), RSS {ours.gateway_rss / MIB:.0f} MiB "
        f"(+{ours.gateway_rss_growth / MIB:.1f} MiB since before the starts)",
        f"  per supervised bot: gateway CPU {per_bot_cpu:.3f} % of a core, RSS {per_bot_rss:.2f} MiB; "
        f"a bot itself: CPU {bot_cpu:.2f} % of a core, RSS {bot_rss:.0f} MiB "
        f"(gateway/bot: CPU {per_bot_cpu / bot_cpu:.3f}, RSS {per_bot_rss / bot_rss:.4f})",
    ]
    return "\n".join(lines)


async def bench(profile: Profile) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    stack = Stack(root)
    max_bots = max(profile.sizes)
    try:
        stack.start(max_bots)
        redis = aioredis.Redis.from_url(stack.redis_url)
        try:
            events, publisher = Events(redis), command_publisher(redis)
            for n in profile.sizes:
                available = psutil.virtual_memory().available
                if n * BOT_MEMORY_GUESS * 1.5 > available:
                    print(f"  N = {n}: skipped, {available / MIB:.0f} MiB available is too little")
                    continue
                t0 = time.monotonic()
                bare = await bare_round(stack, n)
                ours = await gateway_round(stack, n, profile, events, publisher)
                print(report(n, bare, ours), flush=True)
                bot_rss = ours.bots_rss / n
                print(
                    f"  ({time.monotonic() - t0:.0f} s; at {bot_rss / MIB:.0f} MiB a bot, the "
                    f"{psutil.virtual_memory().total / MIB / 1024:.0f} GiB of this machine hold about "
                    f"{int(psutil.virtual_memory().total * 0.8 / bot_rss)} bots in 80 % of its memory)",
                    flush=True,
                )
        finally:
            await redis.aclose()
    finally:
        stack.stop()
    errors = logged_errors(root / "gateway.log")
    print(f"  the gateway logged {len(errors)} error(s){': first ' + errors[0][:300] if errors else ''}")
    shutil.rmtree(root, ignore_errors=True)


def log_entries(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The JSON log's lines, each with what it holds (lines that are not a JSON object are left out)."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                found.append((line, entry))
    return found


def logged_errors(path: Path) -> list[str]:
    """The gateway's JSON log lines at level error or worse."""
    return [line for line, entry in log_entries(path) if entry.get("level") in ("error", "critical")]


def run(quick: bool = False) -> None:
    profile = QUICK if quick else FULL
    load = os.getloadavg()
    print(
        f"Trading gateway with real Freqtrade bots against bare freqtrade processes, N = "
        f"{', '.join(map(str, profile.sizes))}\n"
        f"  gateway defaults: status every 5 s, Freqtrade throttle 5 s, JSON logs at INFO; one pair, one trade per "
        f"bot; bare bots first, then the gateway's, never together\n"
        f"  machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / MIB / 1024:.1f} GiB, Python "
        f"{platform.python_version()}; load average before the run {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    asyncio.run(bench(profile))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="N = 5 only, shorter windows")
    run(parser.parse_args().quick)
