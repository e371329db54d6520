"""The exchange simulator under a fleet's worth of bot traffic, against a bare FastAPI app.

40 dry-run Freqtrade bots make about 100 requests a second to their exchange. Two uvicorn
processes, started with the same settings on free loopback ports:

- baseline: a bare ``FastAPI()`` with one ``GET /baseline`` returning a small constant JSON;
- simulator: ``freqfleet simulator`` exactly as ``freqfleet up`` starts it (seed 42, the ten default
  markets), JSON logs to a temporary file.

The load is open-loop: requests are *scheduled* at a fixed rate (100/s) whatever the answers, over
40 keep-alive connections (one per bot), and a request's latency runs from its scheduled time to
the end of its answer, so a slow server shows up as queueing rather than as a lower rate. The mix is
a bot's: order books (every dry-run fill and exit check), the ticker of a pair, the latest 5m candles
(the refresh of each new candle), sometimes 1000 candles (a bot's start), all tickers (``/balance``,
volume pair lists), prices, and ``exchangeInfo`` now and then. The baseline gets the same schedule.
Each target runs for a bounded time, alternately, after a warm-up that fills the simulator's caches
the way a running fleet does; percentiles are over all measured requests.

``python -m bench.simulator [--quick]`` or ``python -m bench.run simulator``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench._common import (
    ROOT,
    BenchError,
    Connection,
    Server,
    SimulatorServer,
    exchange,
    loop_factory,
    own_env,
    percentile,
    running,
)

RATE = 100.0  # requests per second: about 40 bots
CONNECTIONS = 40  # one keep-alive connection per bot
SEED = 42
PAIRS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "LTCUSDT", "DOTUSDT", "LINKUSDT"]
BASELINE_BODY = {"status": "ok", "service": "baseline"}


@dataclass(frozen=True)
class Profile:
    rounds: int
    seconds: float  # per target and round
    warmup_seconds: float


FULL = Profile(rounds=2, seconds=6.0, warmup_seconds=2.0)
QUICK = Profile(rounds=1, seconds=4.0, warmup_seconds=1.0)

# (endpoint label, weight, request path factory)
PathFactory = Callable[[random.Random, int], str]


def _depth(rng: random.Random, _: int) -> str:
    return f"/api/v3/depth?symbol={rng.choice(PAIRS)}&limit={rng.choice((5, 5, 5, 20, 100))}"


def _ticker(rng: random.Random, _: int) -> str:
    return f"/api/v3/ticker/24hr?symbol={rng.choice(PAIRS)}"


def _recent_klines(rng: random.Random, now_ms: int) -> str:
    since = now_ms - now_ms % 300_000 - 300_000  # the last closed 5m candle and the open one
    return f"/api/v3/klines?interval=5m&limit=1000&symbol={rng.choice(PAIRS)}&startTime={since}"


def _startup_klines(rng: random.Random, _: int) -> str:
    return f"/api/v3/klines?interval=5m&limit=1000&symbol={rng.choice(PAIRS)}"


def _all_tickers(_: random.Random, __: int) -> str:
    return "/api/v3/ticker/24hr"


def _price(rng: random.Random, _: int) -> str:
    return f"/api/v3/ticker/price?symbol={rng.choice(PAIRS)}"


def _exchange_info(_: random.Random, __: int) -> str:
    return "/api/v3/exchangeInfo"


MIX: list[tuple[str, float, PathFactory]] = [
    ("depth", 35, _depth),
    ("ticker/24hr one", 20, _ticker),
    ("klines 5m latest", 25, _recent_klines),
    ("klines 5m x1000", 5, _startup_klines),
    ("ticker/24hr all", 10, _all_tickers),
    ("ticker/price", 3, _price),
    ("exchangeInfo", 2, _exchange_info),
]


# --- servers --------------------------------------------------------------------------------------


def serve_baseline(port: int) -> None:
    """The baseline server (``python -m bench.simulator --serve-baseline PORT``)."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/baseline")
    async def baseline() -> dict[str, str]:
        return dict(BASELINE_BODY)

    # The same settings as exchange_simulator.app.run.
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False, proxy_headers=False)


class BaselineServer(Server):
    """The baseline server in its own process (:func:`serve_baseline`)."""

    health_path = "/baseline"

    def __init__(self, workdir: Path) -> None:
        super().__init__("baseline", workdir, own_env() | {"PYTHONPATH": str(ROOT)})

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.simulator", "--serve-baseline", str(self.port)]


def servers(workdir: Path) -> tuple[Server, Server]:
    """The baseline and ``freqfleet simulator`` (exactly as ``freqfleet up`` starts it, JSON logs), not started."""
    env = {"PYTHONPATH": str(ROOT), "FREQFLEET_SIMULATOR_SEED": str(SEED), "FREQFLEET_LOG_FORMAT": "json"}
    return BaselineServer(workdir), SimulatorServer(workdir, env)


# --- load -----------------------------------------------------------------------------------------


@dataclass
class Sample:
    label: str
    latency_ms: float
    status: int


@dataclass
class Phase:
    samples: list[Sample] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    queued: int = 0  # requests that waited for a free connection (all 40 busy)


async def drive(port: int, seconds: float, rng: random.Random, fixed_path: str | None) -> Phase:
    """Open-loop load at ``RATE`` for ``seconds``: the bot mix, or ``fixed_path`` with the same labels."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(CONNECTIONS):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    labels = [m[0] for m in MIX]
    weights = [m[1] for m in MIX]
    factories = {m[0]: m[2] for m in MIX}
    phase = Phase()
    tasks: list[asyncio.Task[None]] = []

    async def one(label: str, path: str, scheduled: float) -> None:
        if pool.empty():
            phase.queued += 1
        conn = await pool.get()
        try:
            status, _ = await exchange(conn, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        finally:
            pool.put_nowait(conn)
        phase.samples.append(Sample(label, (time.perf_counter() - scheduled) * 1000, status))

    loop = asyncio.get_running_loop()
    total = int(seconds * RATE)
    started = time.perf_counter()
    for i in range(total):
        scheduled = started + i / RATE
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        label = rng.choices(labels, weights)[0]
        path = fixed_path or factories[label](rng, int(time.time() * 1000))
        tasks.append(loop.create_task(one(label, path, scheduled)))
    await asyncio.gather(*tasks)
    phase.seconds = time.perf_counter() - started
    while not pool.empty():
        _, writer = pool.get_nowait()
        writer.close()
    return phase


@dataclass
class Result:
    phases: list[Phase] = field(default_factory=list)

    @property
    def samples(self) -> list[Sample]:
        return [s for p in self.phases for s in p.samples]

    @property
    def rate(self) -> float:
        return sum(len(p.samples) for p in self.phases) / sum(p.seconds for p in self.phases)

    @property
    def cpu_us_per_request(self) -> float:
        return sum(p.cpu_seconds for p in self.phases) / len(self.samples) * 1e6

    def latencies(self, label: str | None = None) -> list[float]:
        return [s.latency_ms for s in self.samples if label is None or s.label == label]


async def measure(baseline: Server, simulator: Server, profile: Profile) -> tuple[Result, Result]:
    rng = random.Random(SEED)
    # Warm-up: a running fleet has loaded its history once (5m x 1000 per pair) and keeps polling.
    await drive(simulator.port, profile.warmup_seconds, rng, None)
    for pair in PAIRS:
        await drive_one(simulator.port, f"/api/v3/klines?interval=5m&limit=1000&symbol={pair}")
    await drive(baseline.port, profile.warmup_seconds, rng, "/baseline")
    results = {"baseline": Result(), "simulator": Result()}
    order = [baseline, simulator]
    for _ in range(profile.rounds):
        for server in order:
            cpu = server.cpu_seconds()
            phase = await drive(server.port, profile.seconds, rng, "/baseline" if server is baseline else None)
            phase.cpu_seconds = server.cpu_seconds() - cpu
            results[server.kind].phases.append(phase)
        order.reverse()
    return results["baseline"], results["simulator"]


async def drive_one(port: int, path: str) -> int:
    conn = await asyncio.open_connection("127.0.0.1", port)
    try:
        status, _ = await exchange(conn, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        return status
    finally:
        conn[1].close()


# --- report ---------------------------------------------------------------------------------------


def _row(label: str, values: Sequence[float], count: int, extra: str = "") -> str:
    if not values:
        return f"  {label:<22}{0:>7}"
    ordered = sorted(values)
    return (
        f"  {label:<22}{count:>7}{percentile(ordered, 50):>9.2f}{percentile(ordered, 95):>9.2f}"
        f"{percentile(ordered, 99):>9.2f}{max(values):>9.2f}{extra}"
    )


def report(baseline: Result, simulator: Result, profile: Profile) -> None:
    import uvicorn

    seconds = profile.rounds * profile.seconds
    print("Exchange simulator under a fleet's load, against a bare FastAPI app")
    print(
        f"  open-loop {RATE:g} req/s over {CONNECTIONS} keep-alive connections, {profile.rounds} round(s) of "
        f"{profile.seconds:g}s per target, alternated, after {profile.warmup_seconds:g}s warm-up; latency from the "
        "scheduled time to the end of the answer"
    )
    print(
        f"  servers: uvicorn {uvicorn.__version__}, 1 worker each, log_config=None, access_log=False; simulator seed "
        f"{SEED}, {len(PAIRS)} markets; machine: {os.cpu_count()} cores, Python {platform.python_version()}; the load "
        "generator shares the cores"
    )
    print()
    print(f"  {'target / endpoint':<22}{'count':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, result in (("baseline", baseline), ("simulator", simulator)):
        statuses = Counter(s.status for s in result.samples)
        bad = sum(v for k, v in statuses.items() if k != 200)
        extra = (
            f"   {result.rate:.1f} req/s achieved (of {RATE:g}), {result.cpu_us_per_request:.0f} us server CPU/req, "
            f"{bad} non-200, {sum(p.queued for p in result.phases)} queued for a connection"
        )
        print(_row(f"{name} (all)", result.latencies(), len(result.samples), extra))
        if result is simulator:
            for label, _, _ in MIX:
                values = result.latencies(label)
                print(_row(f"  {label}", values, len(values)))
    print()
    b, s = sorted(baseline.latencies()), sorted(simulator.latencies())
    print(
        "  simulator / baseline: "
        f"p50 {percentile(s, 50) / percentile(b, 50):.2f}x, p95 {percentile(s, 95) / percentile(b, 95):.2f}x, "
        f"p99 {percentile(s, 99) / percentile(b, 99):.2f}x, "
        f"server CPU/req {simulator.cpu_us_per_request / baseline.cpu_us_per_request:.2f}x, "
        f"rate {simulator.rate / baseline.rate:.2f}x"
    )
    print(f"  ({len(s)} measured simulator requests in {seconds:g}s)")


async def start_and_measure(workdir: Path, profile: Profile) -> tuple[Result, Result]:
    baseline, simulator = servers(workdir)
    async with running([baseline, simulator]):
        return await measure(baseline, simulator, profile)


def run(quick: bool = False) -> None:
    profile = QUICK if quick else FULL
    with (
        tempfile.TemporaryDirectory(prefix="freqfleet-bench-sim-") as tmp,
        asyncio.Runner(loop_factory=loop_factory()) as runner,
    ):
        base, sim = runner.run(start_and_measure(Path(tmp), profile))
    bad = [s for s in sim.samples if s.status != 200]
    if bad:
        raise BenchError(f"{len(bad)} simulator requests failed, e.g. status {bad[0].status} on {bad[0].label}")
    report(base, sim, profile)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.simulator", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run: noisier figures")
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_baseline is not None:
        serve_baseline(args.serve_baseline)
        return
    run(quick=args.quick)


if __name__ == "__main__":
    main()
