"""What our HTTP plumbing costs per request, against a bare FastAPI app.

Our plumbing is ``shared.http.install_http_plumbing`` (one ASGI layer: correlation id, body limit, security headers,
request metrics, access log) plus JSON logging through structlog. Three uvicorn processes,
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
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import (
    BenchError,
    Profile,
    Result,
    Round,
    Server,
    alternated,
    drive,
    fetch_json,
    free_port,
    loop_factory,
    raw_get,
    running,
    server_stack,
)
from bench._http_server import LIVE_BODY, LOGGED_PATH
from freqfleet.embedded import EmbeddedValkey

CONCURRENCY = 16
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


class HttpServer(Server):
    """One ``bench._http_server`` process; its stderr (the JSON log lines) goes to ``log_path``."""

    def __init__(self, kind: str, redis_url: str, workdir: Path) -> None:
        super().__init__(kind, workdir)
        self.redis_url = redis_url
        self.data_dir = workdir / kind

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "bench._http_server", self.kind, "--port", str(self.port)]
        return [*cmd, "--redis-url", self.redis_url, "--data-dir", str(self.data_dir)]


# --- measurement ----------------------------------------------------------------------------------


async def measure(target: Target, server: Server, profile: Profile) -> Round:
    await drive(server.port, raw_get(server.port, target.path), 200, profile.warmup, CONCURRENCY)
    cpu_before, log_before = server.cpu_seconds(), server.log_size()
    elapsed, latencies = await drive(server.port, raw_get(server.port, target.path), 200, profile.requests, CONCURRENCY)
    cpu = server.cpu_seconds() - cpu_before
    with server.log_path.open("rb") as log:
        log.seek(log_before)
        written = log.read()
    n = len(latencies)
    return Round.of(
        elapsed, latencies, cpu_us=cpu / n * 1e6, log_bytes=len(written) / n, log_lines=written.count(b"\n") / n
    )


async def bench(profile: Profile, workdir: Path, redis_url: str) -> list[Result[Target]]:
    servers = {kind: HttpServer(kind, redis_url, workdir) for kind in dict.fromkeys(t.server for t in TARGETS)}
    async with running(servers.values()):
        for target in TARGETS:
            status, body = await fetch_json(servers[target.server].port, target.path)
            if status != 200 or not target.check(body):
                raise BenchError(f"{target.label.split()[-1]} answered {status} {body}: not what we measure")
            port = servers[target.server].port
            await drive(port, raw_get(port, target.path), 200, profile.first_warmup, CONCURRENCY)
        results = [Result(t) for t in TARGETS]
        for result in alternated(results, profile.rounds):
            result.rounds.append(await measure(result.target, servers[result.target.server], profile))
        return results


def report(results: list[Result[Target]], profile: Profile) -> str:
    base = results[0]
    lines = [
        "HTTP plumbing overhead: ours (gateway app) against a bare FastAPI app",
        f"  {profile.requests} GETs per round after {profile.warmup} warm-up, {CONCURRENCY} keep-alive connections,"
        f" {profile.rounds} round(s), targets alternated; medians over rounds",
        f"  servers: {server_stack()}, one process each",
        f"  machine: {os.cpu_count()} cores, Python {platform.python_version()}; the load generator (this process)"
        " shares the cores with the servers",
        "",
        f"  {'target':<38} {'req/s':>7} {'(min-max)':>13} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
        f" {'srv CPU us/req':>14} {'log B/req':>9}",
    ]
    for r in results:
        lines.append(r.row(38, 7, 13) + f" {r.median('cpu_us'):>14.0f} {r.median('log_bytes'):>9.0f}")
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
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
                results = runner.run(bench(profile, workdir, valkey.url))
        finally:
            valkey.stop()
    print(report(results, profile))


if __name__ == "__main__":
    run(quick="--quick" in sys.argv[1:])
