"""What our HTTP plumbing costs per request, against a bare FastAPI app.

Our plumbing is ``shared.http.install_http_plumbing`` (correlation-id middleware, access-log
middleware, Prometheus instrumentator) plus JSON logging through structlog. Three uvicorn processes,
started with the same settings on free loopback ports (see ``bench._http_server``):

- baseline: a bare ``FastAPI()`` serving ``GET /health/live`` with the gateway's JSON;
- ours: the trading gateway from ``create_app``, JSON logging configured as in production, stderr
  to a temporary file; measured on ``/health/live`` and on ``/health/ready`` (a real PING to an
  embedded Valkey);
- ours, logged route: the same gateway plus one route outside the access log's quiet paths. The
  health paths are quiet (no access-log line when the status is below 400), so only this target
  pays for writing a JSON log line per request.

The load generator runs in this process: raw HTTP/1.1 over keep-alive connections on asyncio, a
fixed concurrency, a fixed number of requests after a warm-up. Targets are run alternately, the
order rotated each round, and every figure is the median over the rounds. The load generator shares
the machine's cores with the servers, so throughput is a figure of this machine and this client;
the server's CPU time per request (from the kernel's accounting of the server process) is the
figure least disturbed by that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from bench._http_server import LIVE_BODY, LOGGED_PATH
from freqfleet.embedded import EmbeddedValkey

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 16
START_TIMEOUT = 60.0
PHASE_TIMEOUT = 120.0
REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True)
class Profile:
    rounds: int
    requests: int
    warmup: int
    first_warmup: int


FULL = Profile(rounds=5, requests=5000, warmup=500, first_warmup=1000)
QUICK = Profile(rounds=1, requests=1000, warmup=200, first_warmup=300)


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    server: str
    path: str
    check: Callable[[dict[str, Any]], bool]


def _is_live(body: dict[str, Any]) -> bool:
    return body == LIVE_BODY


def _is_ready(body: dict[str, Any]) -> bool:
    return body.get("status") == "ok" and body.get("checks") == {"redis": "ok"}


TARGETS = (
    Target("baseline", "baseline  bare FastAPI   /health/live", "baseline", "/health/live", _is_live),
    Target("live", "ours      gateway        /health/live", "gateway", "/health/live", _is_live),
    Target("ready", "ours      gateway        /health/ready", "gateway", "/health/ready", _is_ready),
    Target("logged", "ours      gateway        logged route", "gateway-logged", LOGGED_PATH, _is_live),
)


class BenchError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- load generator -------------------------------------------------------------------------------

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


async def _exchange(conn: Connection, raw: bytes) -> tuple[int, bytes]:
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


async def _open(port: int, count: int) -> list[Connection]:
    return [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]


async def _close(conns: Sequence[Connection]) -> None:
    for _, writer in conns:
        writer.close()
    for _, writer in conns:
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def drive(
    port: int, raw: bytes | Sequence[bytes], expect: int, total: int, concurrency: int
) -> tuple[float, list[float]]:
    """``total`` requests over ``concurrency`` keep-alive connections; the wall time (s) and each latency (ms).

    ``raw`` is one request, or several sent in turn (cycling through them, each as often as the others)."""
    requests = [raw] if isinstance(raw, bytes) else list(raw)
    conns = await _open(port, concurrency)
    remaining = total
    latencies: list[float] = []

    async def worker(conn: Connection) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            request = requests[remaining % len(requests)]
            started = time.perf_counter()
            status, body = await _exchange(conn, request)
            latencies.append((time.perf_counter() - started) * 1000)
            if status != expect:
                raise BenchError(f"answered {status} where {expect} was expected: {body[:200]!r}")

    try:
        started = time.perf_counter()
        async with asyncio.timeout(PHASE_TIMEOUT):
            await asyncio.gather(*(worker(c) for c in conns))
        elapsed = time.perf_counter() - started
    finally:
        await _close(conns)
    return elapsed, latencies


async def fetch_json(port: int, path: str) -> tuple[int, dict[str, Any]]:
    conns = await _open(port, 1)
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            status, body = await _exchange(conns[0], raw_get(port, path))
    finally:
        await _close(conns)
    data = json.loads(body)
    if not isinstance(data, dict):
        raise BenchError(f"GET {path}: expected a JSON object, got {body[:200]!r}")
    return status, data


# --- servers --------------------------------------------------------------------------------------


class Server:
    """One ``bench._http_server`` process; its stderr (the JSON log lines) goes to ``log_path``."""

    def __init__(self, kind: str, redis_url: str, workdir: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.redis_url = redis_url
        self.data_dir = workdir / kind
        self.log_path = workdir / f"{kind}.stderr.log"
        self._log: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._ps: psutil.Process | None = None

    def start(self) -> None:
        self._log = self.log_path.open("wb")
        cmd = [sys.executable, "-m", "bench._http_server", self.kind, "--port", str(self.port)]
        cmd += ["--redis-url", self.redis_url, "--data-dir", str(self.data_dir)]
        self._proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        self._ps = psutil.Process(self._proc.pid)

    async def wait_started(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._proc is None or self._proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise BenchError(f"{self.kind} server exited before serving; its stderr ends with:\n{tail}")
            try:
                await fetch_json(self.port, "/health/live")
                return
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.kind} server did not answer within {START_TIMEOUT:g}s") from None
                await asyncio.sleep(0.1)

    def cpu_seconds(self) -> float:
        assert self._ps is not None
        times = self._ps.cpu_times()
        return float(times.user + times.system)

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


# --- measurement ----------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class Round:
    rps: float
    p50: float
    p95: float
    p99: float
    cpu_us: float
    log_bytes: float
    log_lines: float


@dataclass
class Result:
    target: Target
    rounds: list[Round] = field(default_factory=list)

    def median(self, name: str) -> float:
        return statistics.median(float(getattr(r, name)) for r in self.rounds)


async def measure(target: Target, server: Server, profile: Profile) -> Round:
    await drive(server.port, raw_get(server.port, target.path), 200, profile.warmup, CONCURRENCY)
    cpu_before, log_before = server.cpu_seconds(), server.log_size()
    elapsed, latencies = await drive(server.port, raw_get(server.port, target.path), 200, profile.requests, CONCURRENCY)
    cpu = server.cpu_seconds() - cpu_before
    with server.log_path.open("rb") as log:
        log.seek(log_before)
        written = log.read()
    latencies.sort()
    n = len(latencies)
    return Round(
        rps=n / elapsed,
        p50=percentile(latencies, 50),
        p95=percentile(latencies, 95),
        p99=percentile(latencies, 99),
        cpu_us=cpu / n * 1e6,
        log_bytes=len(written) / n,
        log_lines=written.count(b"\n") / n,
    )


async def bench(profile: Profile, workdir: Path, redis_url: str) -> list[Result]:
    servers = {kind: Server(kind, redis_url, workdir) for kind in dict.fromkeys(t.server for t in TARGETS)}
    try:
        for server in servers.values():
            server.start()
        for server in servers.values():
            await server.wait_started()
        for target in TARGETS:
            status, body = await fetch_json(servers[target.server].port, target.path)
            if status != 200 or not target.check(body):
                raise BenchError(f"{target.label.split()[-1]} answered {status} {body}: not what we measure")
            port = servers[target.server].port
            await drive(port, raw_get(port, target.path), 200, profile.first_warmup, CONCURRENCY)
        results = [Result(t) for t in TARGETS]
        for i in range(profile.rounds):
            shift = i % len(results)
            for result in results[shift:] + results[:shift]:
                result.rounds.append(await measure(result.target, servers[result.target.server], profile))
        return results
    finally:
        for server in servers.values():
            server.stop()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def _server_stack() -> str:
    import uvicorn

    loop = "uvloop" if _has("uvloop") else "asyncio"
    http = "httptools" if _has("httptools") else "h11"
    return f"uvicorn {uvicorn.__version__} (loop {loop}, http {http}), 1 worker, log_config=None, access_log=False"


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def report(results: list[Result], profile: Profile) -> str:
    base = results[0]
    lines = [
        "HTTP plumbing overhead: ours (gateway app) against a bare FastAPI app",
        f"  {profile.requests} GETs per round after {profile.warmup} warm-up, {CONCURRENCY} keep-alive connections,"
        f" {profile.rounds} round(s), targets alternated; medians over rounds",
        f"  servers: {_server_stack()}, one process each",
        f"  machine: {os.cpu_count()} cores, Python {platform.python_version()}; the load generator (this process)"
        " shares the cores with the servers",
        "",
        f"  {'target':<38} {'req/s':>7} {'(min-max)':>13} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
        f" {'srv CPU us/req':>14} {'log B/req':>9}",
    ]
    for r in results:
        rps = [x.rps for x in r.rounds]
        spread = f"({min(rps):.0f}-{max(rps):.0f})"
        lines.append(
            f"  {r.target.label:<38} {r.median('rps'):>7.0f} {spread:>13} {r.median('p50'):>7.2f}"
            f" {r.median('p95'):>7.2f} {r.median('p99'):>7.2f} {r.median('cpu_us'):>14.0f}"
            f" {r.median('log_bytes'):>9.0f}"
        )
    lines += ["", f"  {'ours / baseline':<38} {'req/s':>7} {'p50':>7} {'srv CPU/req':>12} {'added CPU us/req':>17}"]
    for r in results[1:]:
        added = r.median("cpu_us") - base.median("cpu_us")
        lines.append(
            f"  {r.target.label:<38} {r.median('rps') / base.median('rps'):>7.2f}"
            f" {r.median('p50') / base.median('p50'):>7.2f} {r.median('cpu_us') / base.median('cpu_us'):>12.2f}"
            f" {added:>17.0f}"
        )
    lines += [
        "",
        "  /health/live and /health/ready are quiet paths of the access log (no line below status 400);",
        "  the logged route shows the cost of one JSON access-log line per request. /health/ready's",
        "  server CPU excludes Valkey's.",
    ]
    return "\n".join(lines)


def run(quick: bool = False) -> None:
    """Run the benchmark and print its table (``bench.run`` calls this)."""
    profile = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="freqfleet-bench-") as tmp:
        workdir = Path(tmp)
        valkey = EmbeddedValkey(workdir, free_port())
        valkey.start()
        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                results = runner.run(bench(profile, workdir, valkey.url))
        finally:
            valkey.stop()
    print(report(results, profile))


if __name__ == "__main__":
    run(quick="--quick" in sys.argv[1:])
