"""MCP tool calls on the gateway over WebSocket and Streamable HTTP, beside a bare GET on the same server.

Everything is real and local: an embedded PostgreSQL (migrated to head) and Valkey in a temporary
folder, the management server (``bench._auth_server management``) and the trading gateway
(``bench._mcp_server``), each under uvicorn in its own process with production settings and JSON logs
to a file. An admin is created in the database; over HTTP it logs in, uploads a strategy and creates a
few bots (no bot runs: no Freqtrade process is needed). The tool measured is ``list_bots``, a read-only
tool that does what most tools do: the gateway checks the token (signature and claims; its revocation in
Valkey at most once a second per token), asks the management server for the caller's bots with the
caller's token (``GET /api/v1/bots``; the answer reused for up to ``FREQFLEET_MCP_LIST_SECONDS``, 1 s, so
with every connection here on one token most calls reuse it), merges this gateway's live view, answers,
and publishes the call's ``MCP_CALL`` audit event, which the management server's consumer writes to the
audit log.

Targets, on the same gateway process and in the same run (alternated, order rotated each round):

- **baseline**: ``GET /health/live`` on the gateway (raw HTTP/1.1 keep-alive, ``bench._common``'s
  load generator);
- **reference**: ``GET /api/v1/bots`` on the management server with the same token: the REST round trip
  inside ``list_bots``;
- **WebSocket**: ``tools/call list_bots`` over ``/mcp/ws`` (subprotocol ``mcp``), one connection per
  client, each initialized once (protocol 2025-11-25), then one call at a time per connection;
  the ``websockets`` client with its defaults (permessage-deflate on);
- **Streamable HTTP, 2026-07-28**: self-contained ``POST /mcp`` requests, as the SDK's client sends them
  by default, raw HTTP/1.1 keep-alive;
- **Streamable HTTP, 2025-11-25 session**: ``POST /mcp`` with an ``Mcp-Session-Id`` per connection (the
  ``initialize`` handshake made once per connection), raw HTTP/1.1 keep-alive.

A fixed number of calls per round after a warm-up over a fixed number of connections; the latency of
each call and the calls per second; the CPU time the gateway, the management server and
PostgreSQL+Valkey spent per call (from the kernel, via psutil). Rate limits are off on the management
server (they would cap the load). After the rounds, the audit log is checked to hold one successful
``mcp.list_bots`` row per call made.

    python -m bench.run mcp          (or: python -m bench.mcp [--quick])
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from websockets.asyncio.client import ClientConnection, connect

from bench._common import (
    ALWAYS_ENTER,
    REQUEST_TIMEOUT,
    AuthServer,
    Backends,
    BenchError,
    GatewayServer,
    Outside,
    OutsideWatch,
    Profile,
    Result,
    Round,
    alternated,
    drive,
    drive_each,
    raw_get,
    request_once,
    running,
    server_env,
    server_stack,
    timed,
)
from bench._servers import run_on_servers
from freqfleet.embedded import EmbeddedPostgres, EmbeddedValkey
from management_server import db
from management_server.audit.models import AuditEntry
from management_server.config import ManagementSettings
from management_server.gateways.service import enroll
from management_server.security.passwords import build_hasher
from management_server.users.models import Role
from management_server.users.service import create_user
from shared.settings import Environment
from trading_gateway.identity import load_or_create
from trading_gateway.mcp.limits import CallRate

EMAIL = "bench-admin@example.com"
PASSWORD = "bench admin password 1"  # noqa: S105 - a throwaway account in a temporary database
GATEWAY_ID = "gw-bench"
OPEN_GATEWAY_ID = "gw-bench-open"  # the same gateway with its per-user MCP limits taken out: what they cost
BOTS = 5
AUDIT_WAIT = 300.0  # seconds the report waits for the audit rows of every call
# Connections of the load. Within the management server's database pool (10): more requests in flight
# than that would make SQLAlchemy open and close overflow connections, another measurement.
CONCURRENCY = 8
META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "freqfleet-bench", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "freqfleet-bench", "version": "1"},
    },
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
STRATEGY = ALWAYS_ENTER.read_text()
FULL = Profile(rounds=3, requests=600, warmup=60, first_warmup=120)  # requests: tool calls
QUICK = Profile(rounds=1, requests=200, warmup=50, first_warmup=100)


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    tool_call: bool  # counts in the audit log
    gateway: str = "limited"  # whose CPU it costs: the gateway with its MCP limits, or the "open" one without


TARGETS = (
    Target("baseline", "baseline   gateway GET /health/live", False),
    Target("rest", "reference  management GET /api/v1/bots", False),
    Target("ws", "MCP        WebSocket list_bots", True),
    Target("http", "MCP        HTTP 2026-07-28 list_bots", True),
    Target("session", "MCP        HTTP session list_bots", True),
    Target("ws-open", "no limits  WebSocket list_bots", True, "open"),
    Target("http-open", "no limits  HTTP 2026-07-28 list_bots", True, "open"),
    Target("session-open", "no limits  HTTP session list_bots", True, "open"),
)
LIMITED = {
    "ws-open": "ws",
    "http-open": "http",
    "session-open": "session",
}  # each "no limits" target beside the same target with them


# --- requests ---------------------------------------------------------------------------------------


def tools_call(request_id: int, *, modern: bool) -> dict[str, Any]:
    params: dict[str, Any] = {"name": "list_bots", "arguments": {}}
    if modern:
        params["_meta"] = META
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def raw_post(port: int, body: dict[str, Any], headers: Mapping[str, str]) -> bytes:
    payload = json.dumps(body, separators=(",", ":")).encode()
    head = [
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: freqfleet-bench",
        "Accept: application/json, text/event-stream",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + payload


def modern_request(port: int, token: str) -> bytes:
    headers = {
        "Authorization": f"Bearer {token}",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "list_bots",
    }
    return raw_post(port, tools_call(1, modern=True), headers)


async def open_session(port: int, token: str) -> str:
    """An initialized 2025-11-25 Streamable HTTP session; its id."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=REQUEST_TIMEOUT) as client:
        opened = await client.post("/mcp", json=INITIALIZE, headers=headers)
        session = str(opened.headers.get("mcp-session-id", ""))
        if opened.status_code != 200 or not session:
            raise BenchError(f"initialize answered {opened.status_code}: {opened.text[:200]}")
        headers |= {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
        done = await client.post("/mcp", json=INITIALIZED, headers=headers)
        if done.status_code != 202:
            raise BenchError(f"notifications/initialized answered {done.status_code}: {done.text[:200]}")
    return session


def session_request(port: int, token: str, session: str) -> bytes:
    headers = {"Authorization": f"Bearer {token}", "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    return raw_post(port, tools_call(1, modern=False), headers)


def check_call(body: bytes | str) -> None:
    """A successful list_bots result listing the bench's bots."""
    answer = json.loads(body)
    result = answer.get("result") if isinstance(answer, dict) else None
    if not isinstance(result, dict) or result.get("isError") is not False:
        raise BenchError(f"list_bots did not succeed: {str(body)[:300]}")
    if result["structuredContent"]["count"] != BOTS:
        raise BenchError(f"list_bots listed {result['structuredContent']['count']} bots, not {BOTS}")


# --- load generators --------------------------------------------------------------------------------


async def open_websockets(url: str, token: str, count: int) -> list[ClientConnection]:
    sockets = []
    for _ in range(count):
        ws = await connect(url, subprotocols=["mcp"], additional_headers={"Authorization": f"Bearer {token}"})  # type: ignore[list-item]
        await ws.send(json.dumps(INITIALIZE))
        if '"protocolVersion":"2025-11-25"' not in str(await ws.recv()):
            raise BenchError("the WebSocket's initialize did not answer 2025-11-25")
        await ws.send(json.dumps(INITIALIZED))
        sockets.append(ws)
    return sockets


async def drive_websockets(url: str, token: str, total: int, concurrency: int) -> tuple[float, list[float]]:
    """``total`` list_bots calls over ``concurrency`` WebSockets, one at a time each (see ``bench._common.drive``)."""
    sockets = await open_websockets(url, token, concurrency)
    ids = itertools.count(1)

    def sender(ws: ClientConnection) -> Callable[[int], Awaitable[None]]:
        async def send(left: int) -> None:
            request_id = next(ids)
            await ws.send(json.dumps(tools_call(request_id, modern=False), separators=(",", ":")))
            answer = str(await ws.recv())
            if f'"id":{request_id},' not in answer or '"isError":false' not in answer:
                raise BenchError(f"unexpected answer: {answer[:200]}")

        return send

    try:
        return await timed(total, [sender(ws) for ws in sockets])
    finally:
        for ws in sockets:
            with contextlib.suppress(Exception):
                await ws.close()


# --- measurement ------------------------------------------------------------------------------------


@dataclass
class Stack:
    gateway: GatewayServer
    open_gateway: GatewayServer
    management: AuthServer
    backends: Backends
    token: str
    loads: dict[str, Callable[[int], Awaitable[tuple[float, list[float]]]]] = field(default_factory=dict)


def build_loads(stack: Stack, sessions: Sequence[str], open_sessions: Sequence[str]) -> None:
    gw, mg, token = stack.gateway.port, stack.management.port, stack.token
    ws_url = f"ws://127.0.0.1:{gw}/mcp/ws"
    og = stack.open_gateway.port
    stack.loads = {
        "ws-open": lambda n: drive_websockets(f"ws://127.0.0.1:{og}/mcp/ws", token, n, CONCURRENCY),
        "http-open": lambda n: drive(og, modern_request(og, token), 200, n, CONCURRENCY),
        "session-open": lambda n: drive_each(og, [session_request(og, token, s) for s in open_sessions], 200, n),
        "baseline": lambda n: drive(gw, raw_get(gw, "/health/live"), 200, n, CONCURRENCY),
        "rest": lambda n: drive(mg, raw_get(mg, "/api/v1/bots", token), 200, n, CONCURRENCY),
        "ws": lambda n: drive_websockets(ws_url, token, n, CONCURRENCY),
        "http": lambda n: drive(gw, modern_request(gw, token), 200, n, CONCURRENCY),
        "session": lambda n: drive_each(gw, [session_request(gw, token, s) for s in sessions], 200, n),
    }


async def measure(result: Result[Target], stack: Stack, profile: Profile) -> int:
    """One round of the target, added to ``result``; the calls it made (its warm-up's too)."""
    load = stack.loads[result.target.key]
    gateway = stack.open_gateway if result.target.gateway == "open" else stack.gateway
    await load(profile.warmup)
    before = gateway.cpu_seconds(), stack.management.cpu_seconds(), stack.backends.snapshot()
    elapsed, latencies = await load(profile.requests)
    gateway_cpu = gateway.cpu_seconds() - before[0]
    management_cpu = stack.management.cpu_seconds() - before[1]
    backend_cpu, _ = Backends.spent(before[2], stack.backends.snapshot())
    n = len(latencies)
    gateway_us, management_us, backend_us = gateway_cpu / n * 1e6, management_cpu / n * 1e6, backend_cpu / n * 1e6
    result.rounds.append(
        Round.of(elapsed, latencies, gateway_us=gateway_us, management_us=management_us, backend_us=backend_us)
    )
    return profile.warmup + n


async def check_targets(stack: Stack, sessions: Sequence[str]) -> int:
    """One request of each kind, checked; how many tool calls that made."""
    gw, mg = stack.gateway.port, stack.management.port
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:
        live = await client.get(f"http://127.0.0.1:{gw}/health/live")
        if live.status_code != 200:
            raise BenchError(f"/health/live answered {live.status_code}")
        bots = await client.get(
            f"http://127.0.0.1:{mg}/api/v1/bots", headers={"Authorization": f"Bearer {stack.token}"}
        )
        if bots.status_code != 200 or len(bots.json()) != BOTS:
            raise BenchError(f"GET /api/v1/bots answered {bots.status_code}: {bots.text[:200]}")
    for raw in (modern_request(gw, stack.token), session_request(gw, stack.token, sessions[0])):
        status, body = await request_once(gw, raw)
        if status != 200:
            raise BenchError(f"POST /mcp answered {status}: {body[:200]!r}")
        check_call(body)
    [ws] = await open_websockets(f"ws://127.0.0.1:{gw}/mcp/ws", stack.token, 1)
    try:
        await ws.send(json.dumps(tools_call(1, modern=False)))
        check_call(await ws.recv())
    finally:
        await ws.close()
    return 3


# --- setup ------------------------------------------------------------------------------------------


async def create_admin(workdir: Path, pg_url: str, redis_url: str, gateways: Sequence[str] = (GATEWAY_ID,)) -> None:
    settings = ManagementSettings(
        env=Environment.test, data_dir=workdir / "data", database_url=pg_url, redis_url=redis_url
    )
    engine = db.create_engine(settings)
    try:
        async with db.create_sessionmaker(engine).begin() as session:
            await create_user(session, build_hasher(settings), EMAIL, PASSWORD, Role.admin)
            # Each gateway's identity, made where it will find it, and enrolled (its audit events count then).
            for gateway_id in gateways:
                identity = load_or_create(workdir / "data" / "gateway" / gateway_id, gateway_id)
                await enroll(session, identity.enrollment(), None)
    finally:
        await engine.dispose()


async def populate(port: int) -> str:
    """Log in, upload a strategy, create the bots; the access token."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=REQUEST_TIMEOUT) as client:
        login = await client.post("/auth/token", data={"username": EMAIL, "password": PASSWORD})
        if login.status_code != 200:
            raise BenchError(f"login answered {login.status_code}: {login.text[:200]}")
        token: str = login.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        strategy = await client.post("/strategies", json={"name": "always", "source": STRATEGY}, headers=headers)
        if strategy.status_code != 201:
            raise BenchError(f"strategy upload answered {strategy.status_code}: {strategy.text[:200]}")
        for i in range(BOTS):
            body = {
                "name": f"bench-{i}",
                "strategy_id": strategy.json()["id"],
                "pairs": ["BTC/USDT"],
                "timeframe": "5m",
                "stake_amount": "10",
                "max_open_trades": 1,
            }
            bot = await client.post("/bots", json=body, headers=headers)
            if bot.status_code != 201:
                raise BenchError(f"bot creation answered {bot.status_code}: {bot.text[:200]}")
    return token


async def audited(pg_url: str, redis_url: str, workdir: Path, expected: int) -> tuple[int, dict[str, int], float]:
    """Successful mcp.list_bots rows, the other MCP rows by action, outcome and reason, and the seconds waited for
    the management server's consumer to write them all (at most AUDIT_WAIT)."""
    settings = ManagementSettings(
        env=Environment.test, data_dir=workdir / "data", database_url=pg_url, redis_url=redis_url
    )
    engine = db.create_engine(settings)
    started = time.monotonic()
    try:
        while True:
            async with db.create_sessionmaker(engine)() as session:
                grouped = await session.execute(
                    select(AuditEntry.action, AuditEntry.outcome, AuditEntry.reason, func.count())
                    .where(AuditEntry.via == "mcp")
                    .group_by(AuditEntry.action, AuditEntry.outcome, AuditEntry.reason)
                )
            ok, other = 0, dict[str, int]()
            for action, outcome, reason, count in grouped.all():
                if (action, outcome) == ("mcp.list_bots", "success"):
                    ok += int(count)
                else:
                    other[f"{action} {outcome}: {reason}"] = int(count)
            if ok + sum(other.values()) >= expected or time.monotonic() - started > AUDIT_WAIT:
                return ok, other, time.monotonic() - started
            await asyncio.sleep(0.5)
    finally:
        await engine.dispose()


# --- orchestration ----------------------------------------------------------------------------------


async def bench(profile: Profile, workdir: Path, pg: EmbeddedPostgres, valkey: EmbeddedValkey) -> str:
    await create_admin(workdir, pg.url(), valkey.url, (GATEWAY_ID, OPEN_GATEWAY_ID))
    env = server_env(workdir, pg.url(), valkey.url)
    management = AuthServer("management", workdir, env)
    backends = Backends.of(pg, valkey)
    async with running([management]):
        token = await populate(management.port)
        gateway_env = env | {
            "FREQFLEET_GATEWAY_ID": GATEWAY_ID,
            "FREQFLEET_MANAGEMENT_URL": f"http://127.0.0.1:{management.port}",
            # The per-user limits are checked on every call, as in production, but set above this load.
            "FREQFLEET_MCP_CALLS_PER_MINUTE": "100000000",
        }
        gateway = GatewayServer(workdir, gateway_env)
        open_gateway = GatewayServer(workdir, gateway_env | {"FREQFLEET_GATEWAY_ID": OPEN_GATEWAY_ID}, limits=False)
        async with running([gateway, open_gateway]):
            stack = Stack(gateway, open_gateway, management, backends, token)
            sessions = [await open_session(gateway.port, token) for _ in range(CONCURRENCY)]
            open_sessions = [await open_session(open_gateway.port, token) for _ in range(CONCURRENCY)]
            build_loads(stack, sessions, open_sessions)
            calls = await check_targets(stack, sessions)
            results = [Result(t) for t in TARGETS]
            for result in results:
                await stack.loads[result.target.key](profile.first_warmup)
                if result.target.tool_call:
                    calls += profile.first_warmup
            watch = OutsideWatch([gateway, open_gateway, management], backends)
            for result in alternated(results, profile.rounds):
                made = await measure(result, stack, profile)
                calls += made if result.target.tool_call else 0
            outside = watch.outside()
            ok, other, waited = await audited(pg.url(), valkey.url, workdir, calls)
            return report(results, outside, profile, calls, ok, other, waited)


def limit_checks_us(calls: int = 200_000, users: int = 100) -> float:
    """CPU per call of what the limits do on a WebSocket call (``wait`` before reading it, ``hit`` when it runs),
    in this process: ``users`` users, their windows filling to thousands of calls each."""
    rate = CallRate(10**8)
    names = [f"user-{n}" for n in range(users)]
    started = time.process_time()
    for n in range(calls):
        user = names[n % users]
        rate.wait(user)
        rate.hit(user)
    return (time.process_time() - started) / calls * 1e6


def report(
    results: list[Result[Target]],
    outside: Outside,
    profile: Profile,
    calls: int,
    ok: int,
    other: dict[str, int],
    waited: float,
) -> str:
    by_key = {r.target.key: r for r in results}
    base, rest = by_key["baseline"], by_key["rest"]
    lines = [
        "MCP tool calls on the gateway: list_bots over WebSocket and Streamable HTTP, beside GET /health/live",
        f"  {profile.requests} calls per round after {profile.warmup} warm-up, {CONCURRENCY} connections (one call at a"
        f" time each), {profile.rounds} round(s), targets alternated; medians over rounds",
        f"  servers: {server_stack()}, one process each; env=production, JSON logs to files",
        f"  list_bots lists {BOTS} bots: the token checked (expiry each call, revocation in Valkey at most once a"
        " second per token), the caller's GET /api/v1/bots from the management server (with the caller's token;"
        " reused up to FREQFLEET_MCP_LIST_SECONDS, 1 s: all connections here share one token), this gateway's"
        " live view merged, the call's MCP_CALL audit event published",
        "  management server: rate limits OFF; its events consumer writes the audit rows meanwhile",
        "  'no limits': a second gateway, the same code without its per-user MCP limits (bench._mcp_server"
        " --no-limits); the first has them, set above this load (every call counted and checked)",
        "  CPU us/call from the kernel: gw = gateway process, mgmt = management server, db = PostgreSQL + Valkey",
        "",
        f"  {'target':<42} {'calls/s':>7} {'(min-max)':>11} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
        f" {'gw CPU':>7} {'mgmt CPU':>8} {'db CPU':>7}",
    ]
    for r in results:
        costs = f" {r.median('gateway_us'):>7.0f} {r.median('management_us'):>8.0f} {r.median('backend_us'):>7.0f}"
        lines.append(r.row(42, 7) + costs)
    lines += ["", f"  {'MCP target':<42} {'calls/s':>7} {'p50':>7} {'p99':>7}   ratios to baseline | to reference"]
    for r in results[2:5]:
        lines.append(
            f"  {r.target.label:<42} {r.median('rps') / base.median('rps'):>7.2f}"
            f" {r.median('p50') / base.median('p50'):>7.2f} {r.median('p99') / base.median('p99'):>7.2f}   |"
            f" {r.median('rps') / rest.median('rps'):>5.2f} {r.median('p50') / rest.median('p50'):>5.2f}"
            f" {r.median('p99') / rest.median('p99'):>5.2f}"
        )
    lines += [
        "",
        f"  {'what the per-user MCP limits cost':<42} {'calls/s':>7} {'gw CPU':>7}   with limits / without",
    ]
    for key, limited_key in LIMITED.items():
        without, limited = by_key[key], by_key[limited_key]
        lines.append(
            f"  {limited.target.label.split(None, 1)[1]:<42} {limited.median('rps') / without.median('rps'):>7.3f}"
            f" {limited.median('gateway_us') / without.median('gateway_us'):>7.3f}"
        )
    checks = limit_checks_us()
    lines.append(
        f"  the checks alone, timed in this process: {checks:.2f} us per call (CallRate.wait + hit, 100 users),"
        f" {checks / by_key['ws'].median('gateway_us') * 100:.2f}% of a WebSocket call's gateway CPU"
    )
    mcp_gw = {r.target.key: r.median("gateway_us") - base.median("gateway_us") for r in results[2:5]}
    lines += [
        "",
        "  gateway CPU per call above /health/live's: "
        + ", ".join(f"{by_key[k].target.label.split(None, 1)[1].strip()} {v:.0f} us" for k, v in mcp_gw.items()),
        f"  audit log: {ok} successful mcp.list_bots rows for {calls} calls made ({sum(other.values())} other MCP"
        f" rows); the consumer had written them {waited:.1f} s after the last call",
        outside.line(),
    ]
    if ok < calls:
        lines.append(f"  WARNING: {calls - ok} calls have no successful audit row")
    for what, count in sorted(other.items()):
        lines.append(f"    {count} x {what}"[:200])
    return "\n".join(line.rstrip() for line in lines)


def run(quick: bool = False) -> None:
    """Run the benchmark and print its table (``bench.run`` calls this)."""
    profile = QUICK if quick else FULL
    print(run_on_servers("mcp", lambda workdir, pg, valkey: bench(profile, workdir, pg, valkey)), flush=True)


if __name__ == "__main__":
    run(quick="--quick" in sys.argv[1:])
