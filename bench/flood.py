"""An agent in bad faith floods the gateway's MCP server: does everyone else, and the kill switch, still answer?

The same real servers as ``bench.mcp`` (embedded PostgreSQL and Valkey, the management server and the gateway,
each under uvicorn in its own process with production settings and the default MCP limits). Two phases of the
same length, quiet then flooded; in both, probes measure:

- ``GET /health/live`` on the gateway every 50 ms (the event loop's responsiveness);
- the gateway's local emergency stop (``POST /api/v1/emergency-stop {"scope": "all"}``, an admin token) every
  500 ms: the answer time of the kill switch (no bot runs here, so it is the switch itself, not Freqtrade);
- bob's ``list_bots`` over his own WebSocket every 250 ms (under his own 300 calls a minute): another user's agent.

The flood is alice's (a plain user): 8 WebSockets (the per-user cap) each keeping its 16 in-flight requests full
of ``list_bots`` and unknown tools, one more sending 1 MiB frames as fast as it can, and a loop opening
Streamable HTTP sessions. The report gives each probe's p50/p99/max in both phases, how many of alice's calls
were served and refused, and how the gateway's memory and CPU moved.

Then the kill switch with real bots: 3 of the admin's bots are started (dry-run ``freqtrade trade`` on
``freqfleet simulator``, through the management server's API as a user starts them) and halted with the gateway's
local emergency stop, in rounds, first quiet, then under the same flood: the gateway's own ``seconds_to_all_paused``
(every bot answered ``stopentry``) and the request's answer time, each against the quiet rounds.

    python -m bench.run flood          (or: python -m bench.flood [--quick])
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bench._common import (
    REQUEST_TIMEOUT,
    AuthServer,
    GatewayServer,
    SimulatorServer,
    free_range,
    percentile,
    running,
    server_env,
)
from bench._servers import run_on_servers
from bench.mcp import GATEWAY_ID, INITIALIZE, INITIALIZED, create_admin, populate
from freqfleet.embedded import EmbeddedPostgres, EmbeddedValkey

PASSWORD = "flood bench password 1"  # noqa: S105 - throwaway accounts in a temporary database
RUNNING_BOTS = 3
START_TIMEOUT = 180.0  # seconds for the bots to run (Freqtrade's imports, on 2 busy cores)


@dataclass
class Probe:
    name: str
    latencies: list[float] = field(default_factory=list)
    failures: int = 0

    def line(self) -> str:
        if not self.latencies:
            return f"  {self.name:<34} {'-':>8} {'-':>8} {'-':>8} {self.failures:>6}"
        ms = sorted(x * 1000 for x in self.latencies)
        return (
            f"  {self.name:<34} {percentile(ms, 50):>8.2f} {percentile(ms, 99):>8.2f} {ms[-1]:>8.2f} {self.failures:>6}"
        )


@dataclass
class Flood:
    served: int = 0
    refused: int = 0
    frames_refused: int = 0
    sessions_refused: int = 0
    sessions_opened: int = 0


async def account(port: int, admin: str, email: str) -> str:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=REQUEST_TIMEOUT) as client:
        made = await client.post(
            "/users", json={"email": email, "password": PASSWORD, "role": "user"}, headers=_bearer(admin)
        )
        if made.status_code != 201:
            raise RuntimeError(f"user creation answered {made.status_code}: {made.text[:200]}")
        login = await client.post("/auth/token", data={"username": email, "password": PASSWORD})
        token: str = login.json()["access_token"]
        return token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def mcp_socket(url: str, token: str) -> ClientConnection:
    ws = await connect(url, subprotocols=["mcp"], additional_headers=_bearer(token), max_size=None)  # type: ignore[list-item]
    await ws.send(json.dumps(INITIALIZE))
    await ws.recv()
    await ws.send(json.dumps(INITIALIZED))
    return ws


def call(request_id: int, tool: str) -> str:
    return json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": tool, "arguments": {}}}
    )


async def probes(gateway: str, ws_url: str, admin: str, bob: str, seconds: float) -> list[Probe]:
    health, kill, agent = Probe("gateway GET /health/live"), Probe("local emergency stop"), Probe("bob's list_bots")
    deadline = time.monotonic() + seconds

    async def every(interval: float, probe: Probe, once: Any) -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                await asyncio.wait_for(once(), 30)
                probe.latencies.append(time.perf_counter() - started)
            except Exception:
                probe.failures += 1
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - started)))

    async with httpx.AsyncClient(base_url=gateway, timeout=30) as http:
        ws = await mcp_socket(ws_url, bob)
        ids = itertools.count(1)

        async def live() -> None:
            (await http.get("/health/live")).raise_for_status()

        async def stop() -> None:
            answer = await http.post("/api/v1/emergency-stop", json={"scope": "all"}, headers=_bearer(admin))
            answer.raise_for_status()

        async def listed() -> None:
            request_id = next(ids)
            await ws.send(call(request_id, "list_bots"))
            while True:
                answer = json.loads(await ws.recv())
                if answer.get("id") == request_id:
                    if answer.get("result", {}).get("isError", True):
                        raise RuntimeError(str(answer)[:200])
                    return

        try:
            await asyncio.gather(every(0.05, health, live), every(0.5, kill, stop), every(0.25, agent, listed))
        finally:
            await ws.close()
    return [health, kill, agent]


async def flood(gateway: str, ws_url: str, alice: str, stop: asyncio.Event, counts: Flood) -> None:
    async def pipeline() -> None:
        ws = await mcp_socket(ws_url, alice)
        ids = itertools.count(1)
        try:

            async def reader() -> None:
                async for raw in ws:
                    answer = json.loads(raw)
                    if "result" in answer and not answer["result"].get("isError"):
                        counts.served += 1
                    else:
                        counts.refused += 1

            reading = asyncio.create_task(reader())
            while not stop.is_set():
                for tool in ("list_bots", "no_such_tool"):
                    await ws.send(call(next(ids), tool))
                await asyncio.sleep(0.001)
            reading.cancel()
        except ConnectionClosed:
            pass
        finally:
            await ws.close()

    async def big_frames() -> None:
        frame = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping", "pad": "x" * (1024 * 1024)})
        while not stop.is_set():  # the gateway closes a connection that sends a frame over its size: reconnect
            try:
                ws = await mcp_socket(ws_url, alice)
            except (InvalidStatus, ConnectionClosed, OSError):
                await asyncio.sleep(0.01)  # the connection cap: wait for the last one to be counted out
                continue
            try:
                await ws.send(frame)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ws.recv(), 5)
            except ConnectionClosed:
                pass
            finally:
                counts.frames_refused += 1
                await ws.close()

    async def sessions() -> None:
        headers = _bearer(alice) | {"Accept": "application/json, text/event-stream"}
        async with httpx.AsyncClient(base_url=gateway, timeout=30) as http:
            while not stop.is_set():
                answer = await http.post("/mcp", json=INITIALIZE, headers=headers)
                if answer.status_code == 429:
                    counts.sessions_refused += 1
                else:
                    counts.sessions_opened += 1

    tasks = [pipeline() for _ in range(7)] + [big_frames(), sessions()]
    with contextlib.suppress(InvalidStatus):
        await asyncio.gather(*tasks)


@dataclass
class Halt:
    started: float  # the start requests sent to every bot running (s)
    paused: float  # the gateway's seconds_to_all_paused
    answered: float  # the emergency stop request's answer time (s)


async def halt_round(management: int, gateway: str, admin: str, bot_ids: list[str]) -> Halt:
    """Start the bots, wait until each runs, then the gateway's local emergency stop for all of them."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{management}/api/v1", timeout=30) as client:
        t0 = time.monotonic()
        for bot_id in bot_ids:
            answer = await client.post(f"/bots/{bot_id}/start", headers=_bearer(admin))
            if answer.status_code not in (200, 202):
                raise RuntimeError(f"start answered {answer.status_code}: {answer.text[:200]}")
        waiting = set(bot_ids)
        while waiting:
            if time.monotonic() - t0 > START_TIMEOUT:
                raise RuntimeError(f"{len(waiting)} bots do not run {START_TIMEOUT:g} s after their start")
            for bot_id in list(waiting):
                bot = (await client.get(f"/bots/{bot_id}", headers=_bearer(admin))).json()
                if bot.get("actual_state") == "running":
                    waiting.discard(bot_id)
            await asyncio.sleep(0.25)
        started = time.monotonic() - t0
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as http:
        t1 = time.perf_counter()
        answer = await http.post("/api/v1/emergency-stop", json={"scope": "all"}, headers=_bearer(admin))
        answered = time.perf_counter() - t1
    answer.raise_for_status()
    paused = answer.json().get("seconds_to_all_paused")
    if paused is None:
        raise RuntimeError(f"the emergency stop did not pause every bot: {answer.text[:300]}")
    return Halt(started, float(paused), answered)


def halt_lines(quiet: list[Halt], loud: list[Halt]) -> list[str]:
    def median(halts: list[Halt], name: str) -> float:
        return float(statistics.median(float(getattr(h, name)) for h in halts))

    lines = [
        f"  kill switch with {RUNNING_BOTS} running bots (local emergency stop, scope all), {len(quiet)} quiet and"
        f" {len(loud)} flooded round(s), medians:",
        f"  {'':<34} {'quiet':>8} {'flooded':>8} {'ratio':>6}",
    ]
    for name, label in (
        ("paused", "all paused (s)"),
        ("answered", "request answered (s)"),
        ("started", "bots running after start (s)"),
    ):
        q, f = median(quiet, name), median(loud, name)
        lines.append(f"  {label:<34} {q:>8.3f} {f:>8.3f} {f / q if q else float('nan'):>6.2f}")
    return lines


async def bench(workdir: Path, pg: EmbeddedPostgres, valkey: EmbeddedValkey, seconds: float, halt_rounds: int) -> str:
    await create_admin(workdir, pg.url(), valkey.url)
    env = server_env(workdir, pg.url(), valkey.url)
    simulator = SimulatorServer(workdir, {"FREQFLEET_LOG_FORMAT": "json"})
    management = AuthServer("management", workdir, env)
    async with contextlib.AsyncExitStack() as servers:
        await servers.enter_async_context(running([simulator, management]))
        admin = await populate(management.port)
        alice = await account(management.port, admin, "alice@example.com")
        bob = await account(management.port, admin, "bob@example.com")
        gateway_env = env | {
            "FREQFLEET_GATEWAY_ID": GATEWAY_ID,
            "FREQFLEET_MANAGEMENT_URL": f"http://127.0.0.1:{management.port}",
            "FREQFLEET_RATE_LIMIT_ENABLED": "true",  # the management server's own limits, as in production
            "FREQFLEET_SIMULATOR_URL": simulator.url,
            "FREQFLEET_BOT_PORT_RANGE_START": str(first := free_range(40)),
            "FREQFLEET_BOT_PORT_RANGE_END": str(first + 39),
        }
        gateway = GatewayServer(workdir, gateway_env)
        await servers.enter_async_context(running([gateway]))  # stopped first
        url = f"http://127.0.0.1:{gateway.port}"
        ws_url = f"ws://127.0.0.1:{gateway.port}/mcp/ws"
        process = gateway.process
        rss_before, cpu_before = process.memory_info().rss, sum(process.cpu_times()[:2])
        quiet = await probes(url, ws_url, admin, bob, seconds)
        cpu_quiet = sum(process.cpu_times()[:2]) - cpu_before
        stop, counts = asyncio.Event(), Flood()
        flooding = asyncio.create_task(flood(url, ws_url, alice, stop, counts))
        await asyncio.sleep(1.0)  # the flood under way
        rss_start = process.memory_info().rss
        cpu_start = sum(process.cpu_times()[:2])
        loud = await probes(url, ws_url, admin, bob, seconds)
        cpu_loud = sum(process.cpu_times()[:2]) - cpu_start
        rss_peak = process.memory_info().rss
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(flooding, 30)

        # The kill switch with real bots, quiet then flooded.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{management.port}/api/v1", timeout=30) as client:
            listed = (await client.get("/bots", headers=_bearer(admin))).json()
        bot_ids = [str(b["id"]) for b in listed][:RUNNING_BOTS]
        quiet_halts = [await halt_round(management.port, url, admin, bot_ids) for _ in range(halt_rounds)]
        stop, counts_after = asyncio.Event(), Flood()
        flooding = asyncio.create_task(flood(url, ws_url, alice, stop, counts_after))
        try:
            await asyncio.sleep(1.0)
            loud_halts = [await halt_round(management.port, url, admin, bot_ids) for _ in range(halt_rounds)]
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(flooding, 30)
        lines = [
            "An MCP flood by one user (alice): 7 WebSockets pipelining list_bots and unknown tools, one sending 1 MiB"
            " frames, a loop opening Streamable HTTP sessions; default MCP limits, management rate limits on",
            f"  {seconds:.0f} s quiet, then {seconds:.0f} s flooded; probes in both (latency ms):",
            "",
            f"  {'probe':<34} {'p50':>8} {'p99':>8} {'max':>8} {'failed':>6}",
            "  quiet",
            *(p.line() for p in quiet),
            "  flooded",
            *(p.line() for p in loud),
            "",
            f"  alice's calls: {counts.served} served, {counts.refused} refused (limits); 1 MiB frames refused:"
            f" {counts.frames_refused}; sessions opened {counts.sessions_opened}, refused {counts.sessions_refused}",
            f"  gateway RSS: {rss_before / 2**20:.0f} MiB before, {rss_start / 2**20:.0f} MiB as the flood began,"
            f" {rss_peak / 2**20:.0f} MiB at its end; gateway CPU: {cpu_quiet / seconds * 100:.0f}% of a core quiet,"
            f" {cpu_loud / seconds * 100:.0f}% flooded",
            "",
            *halt_lines(quiet_halts, loud_halts),
            f"  alice's calls meanwhile: {counts_after.served} served, {counts_after.refused} refused",
        ]
        return "\n".join(lines)


def run(quick: bool = False) -> None:
    seconds, rounds = (5.0, 1) if quick else (20.0, 3)
    print(run_on_servers("flood", lambda workdir, pg, valkey: bench(workdir, pg, valkey, seconds, rounds)), flush=True)


if __name__ == "__main__":
    run(quick="--quick" in sys.argv[1:])
