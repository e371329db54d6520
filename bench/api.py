"""The bots API under load: ``GET /api/v1/bots`` with 100 bots and ``POST /api/v1/bots/{id}/pause``, beside bare
FastAPI routes, in the same run.

Everything is real: an embedded PostgreSQL (migrated to head) and Valkey in a temporary folder, and two uvicorn
processes started by ``bench._auth_server`` with the same settings: a bare ``FastAPI()`` (``GET`` and ``POST
/bench/bare``, a small JSON object) and the management server exactly as ``freqfleet management`` builds it
(env=production, JSON logs to a file, request rate limits off: they would cap the load).

Set-up, as a user would do it: one user (``bench.auth.setup``) with one approved strategy, a gateway that has sent
one heartbeat (``record_heartbeat``, so starts are placed), then over HTTP: log in, create 100 bots, start each.
No gateway consumes the commands: they stay on its stream, where the benchmark counts them at the end.

Targets (raw HTTP/1.1 over keep-alive connections, ``bench._common.drive``; fixed concurrency, fixed
request count after a warm-up, targets alternated, medians over rounds):

- baseline: the bare ``GET /bench/bare`` and ``POST /bench/bare``;
- fair baselines: ``GET /bench/bots`` on the bare server, the same SELECT with asyncpg and the same JSON (``BotOut``)
  for 100 and for 1,000 bots, with no authentication, ORM or middleware;
- reference: ``GET /api/v1/users/me`` with the same token (plumbing, token check, user load: what every
  authenticated route pays before its own work);
- ``GET /api/v1/bots``: the user's first 100 bots (the default page), each a full ``BotOut``, and
  ``GET /api/v1/bots?limit=1000``: all 1,000 (the user has 1,000 bots; the first 100 are started);
- ``POST /api/v1/bots/{id}/pause``: the 100 bots in turn. Each pause loads the bot, sets its desired state,
  bumps its generation, writes a PAUSE_BOT to the transactional outbox and commits, writes an audit row in a
  transaction of its own, and wakes the outbox relay, which publishes the command to the gateway's stream
  in the same server process (its CPU is in the figures).

Then the same targets on two management servers at once (replicas: one process each, the same database, Valkey
and data folder), the load split between them (half the connections and requests each; the pauses to odd and even
bots), against the one server: requests per second, and server CPU per request of both together (issue #24 asks
for it unchanged within 10 %); what bounds throughput on this machine is the CPU all of it needs per request.

Then, in this process, ``GET /bots``'s own steps on the same 100 bots, CPU time per request: loading the rows as
ORM objects (the route's query in a fresh session, the server's engine settings), ``BotOut.model_validate`` of each,
and dumping the list as JSON.

    python -m bench.run api          (or: python -m bench.api [--quick] [--profile])

``--profile`` serves the management server under cProfile and prints where its time went (the functions with the
most time of their own, and the most time with what they call) after the table; cProfile slows every call, so a
profiled run's figures are for finding hot spots, not for comparing.
"""

from __future__ import annotations

import asyncio
import io
import json
import pstats
import re
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pydantic import TypeAdapter
from sqlalchemy import select

from bench._auth_server import BARE_BODY, BARE_PATH, BOTS_PATH
from bench._common import (
    ALWAYS_ENTER,
    REQUEST_TIMEOUT,
    AuthServer,
    Backends,
    BenchError,
    Outside,
    OutsideWatch,
    Profile,
    Result,
    alternated,
    drive,
    login_over_http,
    measure_server,
    measure_servers,
    paced,
    paced_cpu,
    percentile,
    raw_get,
    raw_post,
    request_once,
    running,
    server_env,
    server_stack,
)
from bench._servers import run_on_servers
from bench.auth import EMAIL, Context, setup
from freqfleet.embedded import EmbeddedPostgres, EmbeddedValkey
from management_server.bots import listing
from management_server.bots.models import Bot
from management_server.bots.schemas import BotOut
from management_server.gateways.service import enroll, record_heartbeat
from management_server.strategies import service as strategies
from management_server.users.models import Role
from management_server.users.viewer import Viewer
from shared.bus.messages import GatewayHeartbeat, GatewayHeartbeatData
from shared.bus.streams import commands_stream
from shared.redis import create_redis
from trading_gateway.identity import GatewayIdentity

BOTS = 100  # started, paused in turn, and GET /bots's default page
ALL_BOTS = 1000  # created: GET /bots?limit=1000 lists them all
GATEWAY = "gw-bench"
# Keep-alive connections of the load, as in bench.auth: within the server's database pool (10), so no request
# waits for or opens an overflow connection (a pause commits its own transaction before the audit's).
CONCURRENCY = 8
STRATEGY = ALWAYS_ENTER.read_text()  # enters on every candle (never run here: the benchmark has no gateway)
FULL = Profile(rounds=3, requests=600, warmup=60, first_warmup=120)
PACED_RATE = 200.0  # requests per second of the open-loop phase
PACED_KEYS = ("bare_get", "me", "bots", "pause")
WORKERS = 2  # the second management server's processes
WORKER_KEYS = ("me", "bots", "bots_all", "pause")
REPLICAS = 2  # management servers side by side, the load split between them
QUICK = Profile(rounds=1, requests=200, warmup=30, first_warmup=30)


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    server: str
    baseline: str  # the key of the bare route it is compared with


TARGETS = (
    Target("bare_get", "baseline  bare FastAPI  GET /bench/bare", "bare", "bare_get"),
    Target("bare_post", "baseline  bare FastAPI  POST /bench/bare", "bare", "bare_post"),
    Target("fair", f"baseline  bare asyncpg  GET /bench/bots ({BOTS})", "bare", "fair"),
    Target("fair_all", f"baseline  bare asyncpg  GET /bench/bots ({ALL_BOTS})", "bare", "fair_all"),
    Target("me", "reference management  GET /users/me", "management", "bare_get"),
    Target("bots", f"ours      management  GET /bots ({BOTS})", "management", "fair"),
    Target("bots_all", f"ours      management  GET /bots?limit={ALL_BOTS}", "management", "fair_all"),
    Target("pause", "ours      management  POST /bots/{id}/pause", "management", "bare_post"),
)


# --- set-up -----------------------------------------------------------------------------------------


async def prepare(ctx: Context) -> str:
    """The user's approved strategy and a gateway's heartbeat, in the database; the strategy's id."""
    async with ctx.sessionmaker.begin() as session:
        viewer = Viewer(ctx.user, admin=ctx.user.role is Role.admin)
        strategy = await strategies.upload(session, viewer, "bench-enter", STRATEGY, review=False)
        now = datetime.now(UTC)
        beat = GatewayHeartbeat(
            source=f"gateway:{GATEWAY}",
            occurred_at=now,
            data=GatewayHeartbeatData(
                gateway_id=GATEWAY, host="bench", version="bench", started_at=now, bots_running=0, capacity=BOTS
            ),
        )
        # Only an enrolled gateway's heartbeat counts (and only it gets bots): enroll one, as `up` does.
        identity = GatewayIdentity(GATEWAY, Ed25519PrivateKey.generate(), X25519PrivateKey.generate())
        await enroll(session, identity.enrollment(), None)
        await record_heartbeat(session, beat)
        return str(strategy.id)


async def create_bots(port: int, token: str, strategy_id: str) -> list[str]:
    """1,000 bots created over HTTP, as a user would, the first 100 of them started; their ids."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=REQUEST_TIMEOUT) as client:
        ids: list[str] = []
        for i in range(ALL_BOTS):
            body = {
                "name": f"bench-{i:04d}",
                "strategy_id": strategy_id,
                "pairs": ["BTC/USDT", "ETH/USDT"],
                "timeframe": "5m",
                "stake_amount": "50",
                "max_open_trades": 2,
            }
            created = await client.post("/api/v1/bots", json=body, headers=headers)
            if created.status_code != 201:
                raise BenchError(f"creating a bot answered {created.status_code}: {created.text[:200]}")
            ids.append(created.json()["id"])
        for bot_id in ids[:BOTS]:
            started = await client.post(f"/api/v1/bots/{bot_id}/start", headers=headers)
            if started.status_code != 200 or started.json()["desired_state"] != "running":
                raise BenchError(f"starting a bot answered {started.status_code}: {started.text[:200]}")
    return ids


def requests_for(target: Target, port: int, token: str, bot_ids: list[str], owner: str) -> list[bytes]:
    if target.key == "bare_get":
        return [raw_get(port, BARE_PATH)]
    if target.key in ("fair", "fair_all"):
        return [raw_get(port, f"{BOTS_PATH}?owner={owner}&limit={BOTS if target.key == 'fair' else ALL_BOTS}")]
    if target.key == "bots_all":
        return [raw_get(port, f"/api/v1/bots?limit={ALL_BOTS}", token)]
    if target.key == "bare_post":
        return [raw_post(port, BARE_PATH)]
    if target.key == "me":
        return [raw_get(port, "/api/v1/users/me", token)]
    if target.key == "bots":
        return [raw_get(port, "/api/v1/bots", token)]
    return [raw_post(port, f"/api/v1/bots/{bot_id}/pause", token) for bot_id in bot_ids[:BOTS]]


async def check(port: int, raw: bytes, target: Target, bot_ids: list[str]) -> None:
    """One request of the target, answered with what we mean to measure."""
    status, body = await request_once(port, raw)
    try:
        data: Any = json.loads(body)
    except ValueError:
        raise BenchError(f"{target.label.split(None, 2)[-1]} answered {status} {body[:300]!r}: not JSON") from None
    good = (
        status == 200
        and {
            "bare_get": lambda: data == BARE_BODY,
            "bare_post": lambda: data == BARE_BODY,
            "me": lambda: isinstance(data, dict) and data.get("email") == EMAIL,
            "fair": lambda: isinstance(data, list) and [b["id"] for b in data] == bot_ids[:BOTS],
            "fair_all": lambda: isinstance(data, list) and [b["id"] for b in data] == bot_ids,
            "bots": lambda: isinstance(data, list) and [b["id"] for b in data] == bot_ids[:BOTS],
            "bots_all": lambda: isinstance(data, list) and [b["id"] for b in data] == bot_ids,
            "pause": lambda: isinstance(data, dict) and data.get("desired_state") == "paused" and "command_id" in data,
        }[target.key]()
    )
    if not good:
        raise BenchError(f"{target.label.split(None, 2)[-1]} answered {status} {body[:200]!r}: not what we measure")


# --- where GET /bots goes, in this process ------------------------------------------------------------

PIECES = ("load", "validate", "dump")


async def bench_pieces(ctx: Context, rounds: int) -> dict[str, float]:
    """CPU µs of this process per request for each step of listing the 100 bots, two ways (medians): as the route
    first did (``orm_*``: the rows as ORM objects, ``BotOut.model_validate`` of each, the list dumped as JSON) and
    as it does now (``page``: ``bots.listing.page``, the rows read with asyncpg on the session's connection and
    the JSON written by orjson, both steps in one)."""
    viewer = Viewer(ctx.user, False)
    orm_query = select(Bot).where(Bot.owner_id == ctx.user.id).order_by(Bot.created_at, Bot.id).limit(BOTS)
    adapter = TypeAdapter(list[BotOut])
    times: dict[str, list[float]] = {name: [] for name in (*(f"orm_{piece}" for piece in PIECES), "page")}
    for i in range(rounds + 3):  # the first rounds warm up (statement cache, pool)
        started = time.process_time()
        async with ctx.sessionmaker() as session:
            found = list((await session.execute(orm_query)).scalars())
        loaded = time.process_time()
        outs = [BotOut.model_validate(b) for b in found]
        validated = time.process_time()
        body = adapter.dump_json(outs)
        dumped = time.process_time()
        async with ctx.sessionmaker() as session:
            page = await listing.page(session, viewer, BOTS, 0)
        paged = time.process_time()
        if len(found) != BOTS or page.count != BOTS or not body:
            raise BenchError(f"the route's query found {len(found)} and {page.count} bots, not {BOTS}")
        if i >= 3:
            for name, seconds in zip(PIECES, (loaded - started, validated - loaded, dumped - validated), strict=True):
                times[f"orm_{name}"].append(seconds * 1e6)
            times["page"].append((paged - dumped) * 1e6)
    return {name: statistics.median(values) for name, values in times.items()}


# --- measurement ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    results: list[Result[Target]]
    outside: Outside
    pauses_sent: int
    commands_on_stream: int
    relay_seconds: float
    answer_bytes: dict[str, int]
    pieces: dict[str, float]
    paced: dict[str, tuple[list[float], int]]  # target -> latencies (ms) at PACED_RATE, failures
    workers: list[Result[Target]]  # the same targets on a management server of WORKERS processes
    replicas: list[Result[Target]]  # the same targets on REPLICAS management servers, the load split between them
    paced_cpu: dict[str, tuple[float, float]]  # target -> server CPU us/request at PACED_RATE: 1 server, REPLICAS


async def count_commands(redis_url: str, expected: int) -> tuple[int, float]:
    """Commands on the gateway's stream once the relay has published ``expected`` (or after 30 s); the wait."""
    redis = create_redis(redis_url)
    started = time.monotonic()
    try:
        while True:
            count = int(await redis.xlen(commands_stream(GATEWAY)))
            if count >= expected or time.monotonic() - started > 30:
                return count, time.monotonic() - started
            await asyncio.sleep(0.05)
    finally:
        await redis.aclose()


async def bench_api(
    ctx: Context,
    profile: Profile,
    workdir: Path,
    pg: EmbeddedPostgres,
    valkey: EmbeddedValkey,
    stats: Path | None = None,
) -> Outcome:
    strategy_id = await prepare(ctx)
    env = server_env(workdir, pg.url(), valkey.url)
    servers = {
        kind: AuthServer(kind, workdir, env, profile=stats if kind == "management" else None)
        for kind in ("bare", "management")
    }
    backends = Backends.of(pg, valkey)
    async with running(servers.values()):
        port = servers["management"].port
        token = await login_over_http(port, EMAIL, ctx.password)
        bot_ids = await create_bots(port, token, strategy_id)
        owner = str(ctx.user.id)
        requests = {t.key: requests_for(t, servers[t.server].port, token, bot_ids, owner) for t in TARGETS}
        pauses = 0
        for target in TARGETS:
            await check(servers[target.server].port, requests[target.key][0], target, bot_ids)
            await drive(servers[target.server].port, requests[target.key], 200, profile.first_warmup, CONCURRENCY)
            pauses += 1 + profile.first_warmup if target.key == "pause" else 0
        answer_bytes = {
            t.key: len((await request_once(servers[t.server].port, requests[t.key][0]))[1])
            for t in TARGETS
            if t.key != "pause"
        }
        results = [Result(t) for t in TARGETS]
        watch = OutsideWatch(list(servers.values()), backends)
        for result in alternated(results, profile.rounds):
            raw, server = requests[result.target.key], servers[result.target.server]
            result.rounds.append(await measure_server(server, backends, raw, 200, profile, CONCURRENCY))
        outside = watch.outside()
        pauses += profile.rounds * (profile.warmup + profile.requests)
        seconds = 10.0 if profile.rounds > 1 else 3.0
        paced_results = {}
        for key in PACED_KEYS:  # an open loop: requests as they come, not as answers allow
            target = next(t for t in TARGETS if t.key == key)
            paced_results[key] = await paced(servers[target.server].port, requests[key], 200, PACED_RATE, seconds)
            pauses += int(PACED_RATE * seconds) if key == "pause" else 0
        # The same load on a management server of WORKERS processes (same database, keys and token).
        several = AuthServer("management", workdir, env, workers=WORKERS)
        several.log_path = workdir / f"management-{WORKERS}-workers.stderr.log"
        async with running([several]):
            for key in WORKER_KEYS:
                await drive(
                    several.port, requests_on(requests[key], several.port), 200, profile.first_warmup, CONCURRENCY
                )
                pauses += profile.first_warmup if key == "pause" else 0
            worker_results = [Result(t) for t in TARGETS if t.key in WORKER_KEYS]
            for result in alternated(worker_results, profile.rounds):
                raw = requests_on(requests[result.target.key], several.port)
                result.rounds.append(await measure_server(several, backends, raw, 200, profile, CONCURRENCY))
                pauses += profile.warmup + profile.requests if result.target.key == "pause" else 0
        # Replicas: a second management server beside the first, the load split between them.
        second = AuthServer("management", workdir, env)
        second.log_path = workdir / "management-replica.stderr.log"
        async with running([second]):
            pair = [servers["management"], second]
            for key in WORKER_KEYS:
                warm = requests_on(requests[key], second.port)
                await drive(second.port, warm, 200, profile.first_warmup, CONCURRENCY)
                pauses += profile.first_warmup if key == "pause" else 0
            replica_results = [Result(t) for t in TARGETS if t.key in WORKER_KEYS]
            for result in alternated(replica_results, profile.rounds):
                raws = split_between(requests[result.target.key], [s.port for s in pair])
                result.rounds.append(await measure_servers(pair, backends, raws, 200, profile, CONCURRENCY))
                pauses += profile.warmup + profile.requests if result.target.key == "pause" else 0
            # CPU per request at a rate well below what the machine serves (no contention for the cores in it).
            cpu_rounds: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in WORKER_KEYS}
            for key in [k for _ in range(profile.rounds) for k in WORKER_KEYS]:
                rate = PACED_RATE / 4 if key == "bots_all" else PACED_RATE
                alone = [servers["management"]]
                one = await paced_cpu(alone, [requests[key]], 200, rate, seconds)
                two = await paced_cpu(pair, split_between(requests[key], [s.port for s in pair]), 200, rate, seconds)
                cpu_rounds[key][0].append(one)
                cpu_rounds[key][1].append(two)
                pauses += 2 * int(rate * seconds) if key == "pause" else 0
            cpu_at_rate = {k: (statistics.median(a), statistics.median(b)) for k, (a, b) in cpu_rounds.items()}
        on_stream, waited = await count_commands(valkey.url, BOTS + pauses)
        pieces = await bench_pieces(ctx, profile.rounds * 10)
        return Outcome(
            results, outside, pauses, on_stream, waited, answer_bytes, pieces, paced_results, worker_results,
            replica_results, cpu_at_rate,
        )  # fmt: skip


def split_between(raws: list[bytes], ports: list[int]) -> list[list[bytes]]:
    """The requests shared out over servers in turn (the pauses: each server its own bots), each addressed to its
    server; one request alone goes to every server."""
    if len(raws) == 1:
        return [requests_on(raws, port) for port in ports]
    return [requests_on(raws[i :: len(ports)], port) for i, port in enumerate(ports)]


def requests_on(raws: list[bytes], port: int) -> list[bytes]:
    """The same requests, addressed to another server (its Host header)."""
    return [re.sub(rb"Host: 127\.0\.0\.1:\d+", f"Host: 127.0.0.1:{port}".encode(), raw, count=1) for raw in raws]


def report(outcome: Outcome, profile: Profile) -> str:
    by_key = {r.target.key: r for r in outcome.results}
    lines = [
        f"Bots API: the management server's GET /api/v1/bots ({BOTS} bots) and POST /bots/{{id}}/pause against bare"
        " FastAPI routes",
        f"  {profile.requests} requests per round after {profile.warmup} warm-up, {CONCURRENCY} keep-alive"
        f" connections, {profile.rounds} round(s), targets alternated; medians over rounds",
        f"  servers: {server_stack()}, one process each",
        "  management server: env=production, JSON logs to a file, per-IP and per-user rate limits OFF; one user's"
        f" token; pauses go to the {BOTS} bots in turn",
        "  'db CPU' is PostgreSQL's (all its processes) plus Valkey's, per request",
        "",
        f"  {'target':<44} {'req/s':>6} {'(min-max)':>11} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
        f" {'srv CPU us/req':>14} {'db CPU us/req':>13} {'log B/req':>9} {'new db procs':>12}",
    ]
    for r in outcome.results:
        lines.append(
            r.row(44) + f" {r.median('cpu_us'):>14.0f} {r.median('backend_us'):>13.0f} {r.median('log_bytes'):>9.0f}"
            f" {sum(x.new_backend_procs for x in r.rounds):>12}"
        )
    lines += [
        "",
        f"  {'ours / its baseline':<44} {'req/s':>6} {'p50':>7} {'p99':>7} {'srv CPU/req':>12}"
        f" {'added srv CPU us':>17}",
    ]
    lines += [r.against(by_key[r.target.baseline], 44) for r in outcome.results if r.target.baseline != r.target.key]
    me = by_key["me"].median("cpu_us")
    size, pieces = outcome.answer_bytes, outcome.pieces
    bots_beyond, pause_beyond = by_key["bots"].median("cpu_us") - me, by_key["pause"].median("cpu_us") - me
    relayed = outcome.commands_on_stream >= BOTS + outcome.pauses_sent
    lines += [
        "",
        f"  beyond GET /users/me (what any authenticated request costs): GET /bots {bots_beyond:.0f} us,"
        f" POST pause {pause_beyond:.0f} us of server CPU per request",
        f"  GET /bots's own steps, in this process (CPU us per request, median of {profile.rounds * 10}): load the"
        f" {BOTS} rows as ORM objects {pieces['orm_load']:.0f}, BotOut.model_validate {pieces['orm_validate']:.0f},"
        f" JSON {pieces['orm_dump']:.0f} (before); read with asyncpg and written by orjson {pieces['page']:.0f} (now)",
        f"  answer bodies: GET /bots {size['bots']} B ({size['bots'] / BOTS:.0f} B per bot), ?limit={ALL_BOTS}"
        f" {size['bots_all']} B, the fair baseline's {size['fair']} B and {size['fair_all']} B (the same JSON),"
        f" /users/me {size['me']} B, bare {size['bare_get']} B",
        f"  pauses sent: {outcome.pauses_sent}; commands on the gateway's stream afterwards:"
        f" {outcome.commands_on_stream} ({BOTS} starts + the pauses: the relay was"
        f" {'done' if relayed else 'NOT done'} {outcome.relay_seconds:.2f} s after the last answer)",
        "  'new db procs': PostgreSQL backends started during the target's measured requests (all rounds): the",
        "  server's pool (10) overflowed, and SQLAlchemy opened (and later closed) extra connections",
        outcome.outside.line(),
        "",
        f"  open loop: {PACED_RATE:.0f} requests/s as they come (not as answers allow), latency from when each was due",
        f"  {'target':<44} {'sent':>6} {'failed':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}",
    ]
    for key, (latencies, failed) in outcome.paced.items():
        ordered = sorted(latencies)
        lines.append(
            f"  {by_key[key].target.label:<44} {len(ordered):>6} {failed:>6} {percentile(ordered, 50):>7.2f}"
            f" {percentile(ordered, 99):>7.2f} {ordered[-1]:>7.2f}"
        )
    lines += [
        "",
        f"  the management server in {WORKERS} worker processes (FREQFLEET_MANAGEMENT_WORKERS), same load, against 1",
        f"  {'target':<44} {'req/s':>6} {'1 proc':>7} {'ratio':>6} {'p99 ms':>7} {'srv CPU us/req':>14}",
    ]
    for r in outcome.workers:
        one = by_key[r.target.key]
        rps, single = r.median("rps"), one.median("rps")
        lines.append(
            f"  {r.target.label:<44} {rps:>6.0f} {single:>7.0f} {rps / single:>6.2f} {r.median('p99'):>7.2f}"
            f" {r.median('cpu_us'):>14.0f}"
        )
    lines += replicas_report(outcome, by_key)
    return "\n".join(line.rstrip() for line in lines)


def replicas_report(outcome: Outcome, by_key: dict[str, Result[Target]]) -> list[str]:
    """Two servers against one: throughput, and CPU per request of the servers together (unchanged within 10 % is
    the aim); and the ceiling this machine's cores put on each target (all the CPU a request needs, servers and
    backends, against the cores; the load generator shares them too)."""
    cores = psutil.cpu_count() or 1
    lines = [
        "",
        f"  {REPLICAS} management servers (replicas: one process each, one database, Valkey and data folder), the load"
        f" split between them ({CONCURRENCY // REPLICAS} connections each), against 1 server with {CONCURRENCY}",
        f"  {'target':<44} {'req/s':>6} {'1 srv':>6} {'ratio':>6} {'p99 ms':>7} {'srv CPU us/req':>14}"
        f" {'1 srv':>6} {'ratio':>6} {'db us/req':>9} {'CPU-bound req/s':>15}",
    ]
    for r in outcome.replicas:
        one = by_key[r.target.key]
        cpu, single = r.median("cpu_us"), one.median("cpu_us")
        ceiling = cores * 1e6 / (cpu + r.median("backend_us"))
        lines.append(
            f"  {r.target.label:<44} {r.median('rps'):>6.0f} {one.median('rps'):>6.0f}"
            f" {r.median('rps') / one.median('rps'):>6.2f} {r.median('p99'):>7.2f} {cpu:>14.0f} {single:>6.0f}"
            f" {cpu / single:>6.2f} {r.median('backend_us'):>9.0f} {ceiling:>15.0f}"
        )
    lines.append(
        f"  'CPU-bound req/s': {cores} cores / (server + database CPU per request): the most this machine can serve,"
        " before the load generator's own CPU"
    )
    lines += [
        "",
        f"  server CPU per request at {PACED_RATE:.0f} requests/s in all ({PACED_RATE / 4:.0f}/s for"
        f" ?limit={ALL_BOTS}), an open loop the machine serves without queueing: 1 server, {REPLICAS} sharing it",
        f"  {'target':<44} {'1 srv us':>8} {f'{REPLICAS} srv us':>8} {'ratio':>6}",
    ]
    for key, (one, two) in outcome.paced_cpu.items():
        lines.append(f"  {by_key[key].target.label:<44} {one:>8.0f} {two:>8.0f} {two / one:>6.2f}")
    return lines


def hot_spots(stats_file: Path, count: int = 25) -> str:
    """Where the profiled server's time went: the functions with the most time of their own, and with the most
    time including what they call."""
    out = io.StringIO()
    stats = pstats.Stats(str(stats_file), stream=out)
    stats.strip_dirs()
    for order, title in (("tottime", "own time"), ("cumulative", "time with what they call")):
        out.write(f"\n  management server under cProfile: the {count} functions with the most {title}\n")
        stats.sort_stats(order).print_stats(count)
    return out.getvalue()


async def bench(
    profile: Profile, workdir: Path, pg: EmbeddedPostgres, valkey: EmbeddedValkey, *, profiled: bool = False
) -> None:
    ctx, close = await setup(workdir, pg.url(), valkey.url)
    stats = workdir / "management.prof" if profiled else None
    try:
        outcome = await bench_api(ctx, profile, workdir, pg, valkey, stats)
    finally:
        await close()
    print(report(outcome, profile), flush=True)
    if stats is not None:
        print(hot_spots(stats), flush=True)


def run(quick: bool = False, profiled: bool = False) -> None:
    """Run the benchmark and print its table (``bench.run`` calls this); ``profiled``: and the server's hot spots."""
    profile = QUICK if quick else FULL
    run_on_servers("api", lambda workdir, pg, valkey: bench(profile, workdir, pg, valkey, profiled=profiled))


if __name__ == "__main__":
    run(quick="--quick" in sys.argv[1:], profiled="--profile" in sys.argv[1:])
