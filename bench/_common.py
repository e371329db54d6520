"""What the benchmarks share: their load generators, the records of what they measure, the server processes they
measure and the CPU accounting around them.

- **Load**: raw HTTP/1.1 over keep-alive connections on asyncio. :func:`drive` sends a fixed number of requests
  over a fixed number of connections (:func:`timed` under it, for any transport: the wall time and each call's
  latency); :func:`request_once` and :func:`fetch_json` send one request on a connection of its own.
- **Records**: :class:`Profile` (rounds, requests per round, warm-ups), :class:`Round` (one round of a target:
  requests per second, latency percentiles, per-request costs), :class:`Result` (a target's rounds, their medians,
  its lines in a report), :func:`alternated` (targets alternated, the order rotated each round).
- **Processes**: :class:`Server` (a server process, its output to a file, its CPU time from the kernel) and the
  servers the benchmarks start (:class:`AuthServer`, :class:`GatewayServer`, :class:`SimulatorServer`);
  :func:`serve`, the uvicorn settings every server side runs with; :class:`Backends` (PostgreSQL's and Valkey's CPU)
  and :class:`OutsideWatch` (the CPU other processes of the machine used meanwhile).

The server sides (``bench._*_server``) import this module too (:func:`serve`), the bare baselines among them: what
only the benchmarks' side needs is imported where it is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, ClassVar, Generic, Protocol, TypeVar

import psutil

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0  # seconds for a server to answer after its start
PHASE_TIMEOUT = 120.0  # seconds for one phase of load (a warm-up or a round of a target)
REQUEST_TIMEOUT = 10.0
ALWAYS_ENTER = ROOT / "tests" / "exchange_simulator" / "strategies" / "AlwaysEnter.py"  # a strategy to upload

T = TypeVar("T")


class BenchError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_range(count: int) -> int:
    """The first port of ``count`` consecutive ports that are free now."""
    for base in range(21_000, 60_000, 500):
        ok = True
        for port in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError(f"no {count} consecutive free ports")


def own_env() -> dict[str, str]:
    """This process's environment without any Freqfleet setting (``FREQFLEET_*``, ``DATABASE_URL``, ``REDIS_URL``)."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith("FREQFLEET_") and k not in {"DATABASE_URL", "REDIS_URL"}
    }


def server_env(workdir: Path, pg_url: str, redis_url: str) -> dict[str, str]:
    """This process's environment without any Freqfleet setting, plus the management server's."""
    from shared.settings import Environment, LogFormat

    return own_env() | {
        "FREQFLEET_ENV": Environment.production.value,
        "FREQFLEET_DATABASE_URL": pg_url,
        "FREQFLEET_REDIS_URL": redis_url,
        "FREQFLEET_DATA_DIR": str(workdir / "data"),
        "FREQFLEET_LOG_LEVEL": "INFO",
        "FREQFLEET_LOG_FORMAT": LogFormat.json.value,
        "FREQFLEET_RATE_LIMIT_ENABLED": "false",
        # No gateway answers a benchmark's commands: without this the relay would publish each again every 15 s
        # and more (acks end to end), work no real fleet asks of it.
        "FREQFLEET_COMMAND_ANSWER_WITHIN": "86400",
    }


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's event loop when it is installed (as under uvicorn), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def server_stack() -> str:
    """How :func:`serve` serves, for the reports."""
    import uvicorn

    loop = "uvloop" if _has("uvloop") else "asyncio"
    http = "httptools" if _has("httptools") else "h11"
    return f"uvicorn {uvicorn.__version__} (loop {loop}, http {http}), 1 worker, log_config=None, access_log=False"


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def serve(app: Any, port: int, **settings: Any) -> None:
    """Serve ``app`` on ``port`` as every server side of the benchmarks does (uvicorn, one worker, no access log,
    no logging config of its own), with ``settings`` for uvicorn on top."""
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        workers=1,
        **settings,
    )


# --- load -----------------------------------------------------------------------------------------

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def raw_get(port: int, path: str, token: str | None = None) -> bytes:
    """One keep-alive GET as bytes, with a bearer token when given."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: freqfleet-bench\r\n{auth}\r\n".encode("ascii")


def raw_post(port: int, path: str, token: str | None = None, body: bytes = b"") -> bytes:
    """One keep-alive POST as bytes (a JSON body when given), with a bearer token when given."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    kind = "Content-Type: application/json\r\n" if body else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: freqfleet-bench\r\n{auth}{kind}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


async def exchange(conn: Connection, raw: bytes) -> tuple[int, bytes]:
    """Send one request on a keep-alive connection; the status and the body of the answer."""
    reader, writer = conn
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = -1
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
            break
    if length < 0:
        raise BenchError(f"answer without Content-Length: {head[:200]!r}")
    return status, await reader.readexactly(length)


async def open_connections(port: int, count: int) -> list[Connection]:
    return [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]


async def close_connections(conns: Sequence[Connection]) -> None:
    for _, writer in conns:
        writer.close()
    for _, writer in conns:
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def request_once(port: int, raw: bytes, timeout: float = REQUEST_TIMEOUT) -> tuple[int, bytes]:
    """One request on a connection of its own; the status and the body of the answer."""
    conns = await open_connections(port, 1)
    try:
        async with asyncio.timeout(timeout):
            return await exchange(conns[0], raw)
    finally:
        await close_connections(conns)


async def fetch_json(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """GET ``path`` on a connection of its own; the status and the JSON object answered."""
    status, body = await request_once(port, raw_get(port, path))
    data = json.loads(body)
    if not isinstance(data, dict):
        raise BenchError(f"GET {path}: expected a JSON object, got {body[:200]!r}")
    return status, data


async def timed(total: int, senders: Sequence[Callable[[int], Awaitable[None]]]) -> tuple[float, list[float]]:
    """``total`` calls shared by ``senders``, each a worker making one call at a time (within :data:`PHASE_TIMEOUT`);
    the wall time (s) and each call's latency (ms). A sender is given how many calls are left after its own."""
    remaining = total
    latencies: list[float] = []

    async def worker(send: Callable[[int], Awaitable[None]]) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            left = remaining
            started = time.perf_counter()
            await send(left)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    async with asyncio.timeout(PHASE_TIMEOUT):
        await asyncio.gather(*(worker(send) for send in senders))
    return time.perf_counter() - started, latencies


async def drive(
    port: int, raw: bytes | Sequence[bytes], expect: int, total: int, concurrency: int
) -> tuple[float, list[float]]:
    """``total`` requests over ``concurrency`` keep-alive connections; the wall time (s) and each latency (ms).

    ``raw`` is one request, or several sent in turn (cycling through them, each as often as the others)."""
    requests = [raw] if isinstance(raw, bytes) else list(raw)
    return await _drive(port, concurrency, expect, total, lambda _, left: requests[left % len(requests)])


async def drive_each(port: int, raws: Sequence[bytes], expect: int, total: int) -> tuple[float, list[float]]:
    """Like :func:`drive`, but over one keep-alive connection per request of ``raws``, each sending its own."""
    return await _drive(port, len(raws), expect, total, lambda connection, _: raws[connection])


async def _drive(
    port: int, count: int, expect: int, total: int, pick: Callable[[int, int], bytes]
) -> tuple[float, list[float]]:
    """``total`` requests over ``count`` connections: ``pick(connection, left)`` is the next request of one."""
    conns = await open_connections(port, count)

    def sender(connection: int) -> Callable[[int], Awaitable[None]]:
        async def send(left: int) -> None:
            status, body = await exchange(conns[connection], pick(connection, left))
            if status != expect:
                raise BenchError(f"answered {status} where {expect} was expected: {body[:200]!r}")

        return send

    try:
        return await timed(total, [sender(i) for i in range(count)])
    finally:
        await close_connections(conns)


async def paced(
    port: int, raws: Sequence[bytes], expect: int, rate: float, seconds: float, connections: int = 32
) -> tuple[list[float], int]:
    """An open loop: one request every ``1/rate`` s for ``seconds`` (cycling through ``raws``), whatever the answers
    do, over up to ``connections`` keep-alive connections. Each latency (ms) counts from when its request was due,
    so time spent waiting for a free connection (the server falling behind) is in it; and how many failed."""
    conns = await open_connections(port, connections)
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for conn in conns:
        idle.put_nowait(conn)
    latencies: list[float] = []
    failed = 0

    async def one(due: float, raw: bytes) -> None:
        nonlocal failed
        conn = await idle.get()
        try:
            status, _ = await exchange(conn, raw)
            if status != expect:
                failed += 1
        finally:
            idle.put_nowait(conn)
        latencies.append((time.perf_counter() - due) * 1000)

    tasks = []
    started = time.perf_counter()
    try:
        async with asyncio.timeout(seconds + PHASE_TIMEOUT):
            for i in range(int(rate * seconds)):
                due = started + i / rate
                if (wait := due - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
                tasks.append(asyncio.create_task(one(due, raws[i % len(raws)])))
            await asyncio.gather(*tasks)
    finally:
        await close_connections(conns)
    return latencies, failed


# --- records --------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def alternated(items: Sequence[T], rounds: int) -> Iterator[T]:
    """Every item ``rounds`` times, round after round, the order rotated by one each round."""
    for i in range(rounds):
        shift = i % len(items)
        yield from [*items[shift:], *items[:shift]]


@dataclass(frozen=True)
class Profile:
    """How long a benchmark of targets under load runs: rounds of ``requests`` after ``warmup``, and a first warm-up
    of each target before the rounds."""

    rounds: int
    requests: int
    warmup: int
    first_warmup: int


@dataclass
class Round:
    """One round of a target: requests per second, latency percentiles (ms), and per request what the processes a
    benchmark watches cost: CPU (µs) of the server, PostgreSQL and Valkey (``backend``), the gateway and the
    management server when both run, the server's log (bytes, lines); the PostgreSQL backends started meanwhile."""

    rps: float
    p50: float
    p95: float
    p99: float
    cpu_us: float = 0.0
    backend_us: float = 0.0
    new_backend_procs: int = 0
    log_bytes: float = 0.0
    log_lines: float = 0.0
    gateway_us: float = 0.0
    management_us: float = 0.0

    @classmethod
    def of(cls, elapsed: float, latencies: list[float], **per_request: Any) -> Round:
        """The round of ``len(latencies)`` requests in ``elapsed`` s (``latencies`` is sorted in place), with the
        other figures (``per_request``, already per request)."""
        latencies.sort()
        timing = cls(
            rps=len(latencies) / elapsed,
            p50=percentile(latencies, 50),
            p95=percentile(latencies, 95),
            p99=percentile(latencies, 99),
        )
        return replace(timing, **per_request)


class Labelled(Protocol):
    @property
    def label(self) -> str: ...


TargetT = TypeVar("TargetT", bound=Labelled)


@dataclass
class Result(Generic[TargetT]):
    """A target's rounds."""

    target: TargetT
    rounds: list[Round] = field(default_factory=list)

    def median(self, name: str) -> float:
        return statistics.median(float(getattr(r, name)) for r in self.rounds)

    def row(self, label_width: int, rps_width: int = 6, spread_width: int = 11) -> str:
        """The start of the target's line in a report: its label, req/s (the median and ``(min-max)``), and the
        medians of p50, p95 and p99 (ms)."""
        rps = [r.rps for r in self.rounds]
        spread = f"({min(rps):.0f}-{max(rps):.0f})"
        return (
            f"  {self.target.label:<{label_width}} {self.median('rps'):>{rps_width}.0f} {spread:>{spread_width}}"
            f" {self.median('p50'):>7.2f} {self.median('p95'):>7.2f} {self.median('p99'):>7.2f}"
        )

    def against(self, base: Result[Any], label_width: int) -> str:
        """The target's line in a report's ``ours / baseline`` table: the ratios of req/s, p50, p99 and server CPU
        per request to ``base``'s, and the server CPU (µs) it adds per request."""
        added = self.median("cpu_us") - base.median("cpu_us")
        return (
            f"  {self.target.label:<{label_width}} {self.median('rps') / base.median('rps'):>6.2f}"
            f" {self.median('p50') / base.median('p50'):>7.2f} {self.median('p99') / base.median('p99'):>7.2f}"
            f" {self.median('cpu_us') / base.median('cpu_us'):>12.2f} {added:>17.0f}"
        )


# --- processes ------------------------------------------------------------------------------------


class Server:
    """A server process (:meth:`command`) with ``env`` (None: this process's), its output to ``<kind>.stderr.log``
    in ``workdir``; ready when it answers ``health_path``."""

    health_path: ClassVar[str] = "/health/live"
    new_session: ClassVar[bool] = False  # in a session of its own (a terminal's Ctrl-C does not reach it)

    def __init__(self, kind: str, workdir: Path, env: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self.port = free_port()
        self.log_path = workdir / f"{kind}.stderr.log"
        self.env = None if env is None else dict(env)
        self._log: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._ps: psutil.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self._log = self.log_path.open("wb")
        self._proc = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=self.new_session,
        )
        self._ps = psutil.Process(self._proc.pid)

    async def wait_started(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._proc is None or self._proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise BenchError(f"{self.kind} server exited before serving; its stderr ends with:\n{tail}")
            try:
                await fetch_json(self.port, self.health_path)
                return
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.kind} server did not answer within {START_TIMEOUT:g}s") from None
                await asyncio.sleep(0.1)

    @property
    def process(self) -> psutil.Process:
        assert self._ps is not None
        return self._ps

    def cpu_seconds(self) -> float:
        """CPU time of the server's process and its children (worker processes, when it has some)."""
        total = 0.0
        for proc in [self.process, *self.process.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        if self._log is not None:
            self._log.close()


@contextlib.asynccontextmanager
async def running(servers: Iterable[Server]) -> AsyncIterator[None]:
    """The servers started, all at once, and answering; stopped at the end."""
    started = list(servers)
    try:
        for server in started:
            server.start()
        for server in started:
            await server.wait_started()
        yield
    finally:
        for server in started:
            server.stop()


class AuthServer(Server):
    """A ``bench._auth_server KIND`` process (``bare`` or ``management``) with its own environment; with
    ``profile``, under cProfile, its statistics written there when it stops."""

    def __init__(
        self, kind: str, workdir: Path, env: Mapping[str, str], profile: Path | None = None, workers: int = 1
    ) -> None:
        super().__init__(kind, workdir, env)
        self.profile = profile
        self.workers = workers

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "bench._auth_server", self.kind, "--port", str(self.port)]
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        return cmd if self.profile is None else [*cmd, "--profile", str(self.profile)]


class GatewayServer(Server):
    """A ``bench._mcp_server`` process (the trading gateway) with its own environment; ``limits=False``: without its
    per-user MCP limits."""

    def __init__(self, workdir: Path, env: Mapping[str, str], *, limits: bool = True) -> None:
        super().__init__("gateway" if limits else "gateway-open", workdir, env)
        self.limits = limits

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "bench._mcp_server", "--port", str(self.port)]
        return cmd if self.limits else [*cmd, "--no-limits"]


class SimulatorServer(Server):
    """``freqfleet simulator`` in its own process and session, with this process's environment without Freqfleet's
    settings, plus ``env``."""

    health_path = "/_sim/health"
    new_session = True

    def __init__(self, workdir: Path, env: Mapping[str, str] | None = None) -> None:
        super().__init__("simulator", workdir)
        self.env = own_env() | {"FREQFLEET_SIMULATOR_PORT": str(self.port)} | dict(env or {})

    def command(self) -> list[str]:
        return [sys.executable, "-m", "freqfleet", "simulator"]


class Backends:
    """CPU time of PostgreSQL (the postmaster and all its processes) and Valkey."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)

    @classmethod
    def of(cls, *servers: Any) -> Backends:
        """The backends of embedded servers (``.pid``: None when not running)."""
        return cls([s.pid for s in servers if s.pid is not None])

    def snapshot(self) -> dict[int, float]:
        procs: list[psutil.Process] = []
        for pid in self.pids:
            try:
                proc = psutil.Process(pid)
                procs += [proc, *proc.children(recursive=True)]
            except psutil.Error:
                continue
        cpu: dict[int, float] = {}
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            cpu[proc.pid] = float(times.user + times.system)
        return cpu

    @staticmethod
    def spent(before: Mapping[int, float], after: Mapping[int, float]) -> tuple[float, int]:
        """CPU seconds between the snapshots and how many processes were new in the second one."""
        return sum(t - before.get(pid, 0.0) for pid, t in after.items()), len(after.keys() - before.keys())


class Load(Protocol):
    """How many requests a round makes, after how many of warm-up (a :class:`Profile`, or a benchmark's own)."""

    @property
    def requests(self) -> int: ...

    @property
    def warmup(self) -> int: ...


async def measure_server(
    server: Server, backends: Backends, raw: bytes | Sequence[bytes], expect: int, load: Load, concurrency: int
) -> Round:
    """A round of ``load`` on ``server`` over ``concurrency`` connections, with the server's CPU, the backends' CPU
    and the server's log per request, and the backends' processes started meanwhile."""
    await drive(server.port, raw, expect, load.warmup, concurrency)
    cpu_before, backends_before, log_before = server.cpu_seconds(), backends.snapshot(), server.log_size()
    elapsed, latencies = await drive(server.port, raw, expect, load.requests, concurrency)
    cpu = server.cpu_seconds() - cpu_before
    backend_cpu, new_procs = Backends.spent(backends_before, backends.snapshot())
    log_bytes = server.log_size() - log_before
    n = len(latencies)
    return Round.of(
        elapsed,
        latencies,
        cpu_us=cpu / n * 1e6,
        backend_us=backend_cpu / n * 1e6,
        new_backend_procs=new_procs,
        log_bytes=log_bytes / n,
    )


async def measure_servers(
    servers: Sequence[Server],
    backends: Backends,
    raws: Sequence[bytes | Sequence[bytes]],
    expect: int,
    load: Load,
    concurrency: int,
) -> Round:
    """A round of ``load`` spread over ``servers`` at once (replicas behind a load balancer): each gets its share of
    the requests (``raws[i]``, addressed to it) over its share of ``concurrency`` connections. Requests per second
    of all; CPU per request of all the servers together, and of the backends."""
    share, connections = load.requests // len(servers), max(1, concurrency // len(servers))
    pairs = list(zip(servers, raws, strict=True))
    await asyncio.gather(*(drive(s.port, raw, expect, load.warmup // len(servers), connections) for s, raw in pairs))
    cpu_before, backends_before = [s.cpu_seconds() for s in servers], backends.snapshot()
    started = time.perf_counter()
    done = await asyncio.gather(*(drive(s.port, raw, expect, share, connections) for s, raw in pairs))
    elapsed = time.perf_counter() - started
    cpu = sum(s.cpu_seconds() - before for s, before in zip(servers, cpu_before, strict=True))
    backend_cpu, new_procs = Backends.spent(backends_before, backends.snapshot())
    latencies = [latency for _, found in done for latency in found]
    n = len(latencies)
    return Round.of(
        elapsed, latencies, cpu_us=cpu / n * 1e6, backend_us=backend_cpu / n * 1e6, new_backend_procs=new_procs
    )


async def paced_cpu(
    servers: Sequence[Server], raws: Sequence[Sequence[bytes]], expect: int, rate: float, seconds: float
) -> float:
    """Server CPU (µs) per request of ``servers`` together under an open loop of ``rate`` requests a second in all,
    shared out evenly (``raws[i]`` to server i): a rate the machine serves without queueing, so the figure is the
    work of a request, not what contention for the cores adds to it."""
    before = [s.cpu_seconds() for s in servers]
    done = await asyncio.gather(
        *(paced(s.port, raw, expect, rate / len(servers), seconds) for s, raw in zip(servers, raws, strict=True))
    )
    cpu = sum(s.cpu_seconds() - b for s, b in zip(servers, before, strict=True))
    count = sum(len(latencies) for latencies, _ in done)
    if any(failed for _, failed in done):
        raise BenchError(f"{sum(failed for _, failed in done)} requests failed in the paced CPU round")
    return cpu / count * 1e6


@dataclass(frozen=True)
class Outside:
    """CPU the machine spent outside this benchmark's processes while the rounds ran: other work shares it."""

    elapsed: float
    others: float
    steal: float

    def line(self, steal: bool = True) -> str:
        others = max(0.0, self.others)
        line = (
            f"  while the rounds ran ({self.elapsed:.0f} s), other processes on this machine used {others:.1f} CPU-s"
            f" ({others / self.elapsed * 100:.0f}% of a core)"
        )
        return line + (f", steal {self.steal:.1f} s" if steal else "")


def machine_cpu() -> tuple[float, float]:
    """CPU seconds the whole machine has been busy, and the seconds stolen by the hypervisor."""
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
    return float(busy), float(getattr(t, "steal", 0.0))


def our_cpu(servers: Sequence[Server], backends: Backends) -> float:
    own = psutil.Process().cpu_times()
    return float(own.user + own.system) + sum(s.cpu_seconds() for s in servers) + sum(backends.snapshot().values())


class OutsideWatch:
    """From its making to :meth:`outside`: what the machine spent beside this process, ``servers`` and ``backends``."""

    def __init__(self, servers: Sequence[Server], backends: Backends) -> None:
        self.servers = list(servers)
        self.backends = backends
        self.started, (self.busy, self.steal), self.ours = time.monotonic(), machine_cpu(), our_cpu(servers, backends)

    def outside(self) -> Outside:
        (busy, steal), ours = machine_cpu(), our_cpu(self.servers, self.backends)
        others = (busy - self.busy) - (ours - self.ours)
        return Outside(time.monotonic() - self.started, others, steal - self.steal)


async def login_over_http(port: int, email: str, password: str) -> str:
    """An access token of ``email`` from the management server on ``port``."""
    import httpx

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=REQUEST_TIMEOUT) as client:
        response = await client.post("/api/v1/auth/token", data={"username": email, "password": password})
    if response.status_code != 200:
        raise BenchError(f"login answered {response.status_code}: {response.text[:200]}")
    token = response.json()["access_token"]
    if not isinstance(token, str):
        raise BenchError("login answered without an access token")
    return token
