"""``GET /api/v1/analytics/fleet`` over 100 bots with 1,000 closed trades each, cold and cached, beside a bare
SQL aggregate of the same trades in the same run.

A real embedded PostgreSQL (migrated to head) and Valkey in a temporary folder; the management server as
``management_server.main`` builds it, under uvicorn in its own process (``bench._auth_server management``,
JSON logs to a file, request rate limits off), with an admin created by ``create_user``. 100 bots are
created through the API; their 100,000 trades (seeded random walks over 200 days, 12 pairs) are written
with ``COPY``. Targets, each measured with ``bench._common``'s load generator:

- **bare SQL**: what PostgreSQL alone takes for the aggregates a dashboard would ask it for, from this
  process over asyncpg: counts, win rate, profit, profit factor over all trades (one query), and the same
  per bot (``GROUP BY``: 100 rows). No drawdown, Sharpe or equity curve: SQL has no cheap form of them.
- **cold**: the fleet's analytics computed from scratch: before each request the cache version of the
  fleet is bumped (as a new trade does), so the server reads the 100,000 trades and computes every figure
  (and the 100 per-bot lines); one request at a time.
- **cached**: the same answer from Redis: latency one request at a time, throughput over ``CONCURRENCY``
  keep-alive connections.
- the same two for one bot (``/analytics/bots/{id}``, 1,000 trades).

    python -m bench.run analytics          (or: python -m bench.analytics [--quick])
"""

from __future__ import annotations

import json
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from bench._common import (
    REQUEST_TIMEOUT,
    AuthServer,
    Backends,
    BenchError,
    Outside,
    OutsideWatch,
    Server,
    close_connections,
    drive,
    exchange,
    login_over_http,
    open_connections,
    percentile,
    raw_get,
    request_once,
    server_env,
    server_stack,
)
from bench._servers import run_on_servers
from bench.auth import EMAIL
from freqfleet.embedded import EmbeddedPostgres, EmbeddedValkey
from management_server import db
from management_server.analytics.cache import PREFIX
from management_server.config import ManagementSettings
from management_server.security.passwords import build_hasher
from management_server.users.models import Role
from management_server.users.service import create_user
from shared.redis import create_redis
from shared.settings import Environment

BOTS = 100
TRADES_PER_BOT = 1000
PAIRS = [f"{b}/USDT" for b in ("BTC", "ETH", "BNB", "SOL", "XRP", "ADA", "DOGE", "LTC", "DOT", "LINK", "AVAX", "TRX")]
CONCURRENCY = 8
FLEET_PATH = "/api/v1/analytics/fleet"
STRATEGY = """
from freqtrade.strategy import IStrategy


class BenchStrategy(IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "5m"
    minimal_roi = {"0": 0.01}
    stoploss = -0.05

    def populate_indicators(self, dataframe, metadata):
        return dataframe

    def populate_entry_trend(self, dataframe, metadata):
        return dataframe

    def populate_exit_trend(self, dataframe, metadata):
        return dataframe
"""
SUM_SQL = """
SELECT count(*), count(*) FILTER (WHERE NOT is_open), avg((profit_ratio >= 0)::int), sum(profit_abs),
       sum(profit_abs) FILTER (WHERE profit_abs > 0) / nullif(-sum(profit_abs) FILTER (WHERE profit_abs < 0), 0),
       min(open_date), max(open_date)
FROM trades
"""
PER_BOT_SQL = """
SELECT bot_id, count(*), avg((profit_ratio >= 0)::int), sum(profit_abs),
       sum(profit_abs) FILTER (WHERE profit_abs > 0) / nullif(-sum(profit_abs) FILTER (WHERE profit_abs < 0), 0)
FROM trades GROUP BY bot_id
"""


@dataclass(frozen=True)
class Profile:
    cold: int  # sequential cold requests (each recomputes)
    cached: int  # cached requests per round
    sql: int  # runs of each SQL query
    rounds: int


FULL = Profile(cold=12, cached=1000, sql=15, rounds=2)
QUICK = Profile(cold=6, cached=400, sql=6, rounds=1)


@dataclass
class Row:
    label: str
    latencies: list[float] = field(default_factory=list)  # ms
    cpu_us: list[float] = field(default_factory=list)  # server CPU per request
    db_us: list[float] = field(default_factory=list)  # PostgreSQL + Valkey CPU per request
    rps: list[float] = field(default_factory=list)

    def p(self, q: float) -> float:
        return percentile(sorted(self.latencies), q)


async def seed(conn: asyncpg.Connection, port: int, password: str) -> tuple[str, list[str]]:
    """100 bots through the API, their trades with COPY on ``conn``; the token and the bot ids."""
    token = await login_over_http(port, EMAIL, password)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=60) as api:
        strategy = await api.post("/strategies", json={"name": "bench", "source": STRATEGY}, headers=headers)
        if strategy.status_code != 201:
            raise BenchError(f"strategy upload answered {strategy.status_code}: {strategy.text[:200]}")
        bot_ids = []
        for n in range(BOTS):
            body = {
                "name": f"bench-{n:03d}",
                "strategy_id": strategy.json()["id"],
                "pairs": PAIRS,
                "timeframe": "5m",
                "stake_amount": "100",
                "max_open_trades": 5,
                "dry_run_wallet": "10000",
            }
            created = await api.post("/bots", json=body, headers=headers)
            if created.status_code != 201:
                raise BenchError(f"bot creation answered {created.status_code}: {created.text[:200]}")
            bot_ids.append(created.json()["id"])
    rng = np.random.default_rng(20261130)
    start = datetime(2026, 5, 1, tzinfo=UTC)
    records: list[tuple[Any, ...]] = []
    for bot_id in bot_ids:
        gaps = rng.exponential(200 * 24 * 60 / TRADES_PER_BOT, TRADES_PER_BOT)
        opens = np.cumsum(gaps)
        held = rng.uniform(5, 600, TRADES_PER_BOT)
        ratios = rng.normal(0.001, 0.02, TRADES_PER_BOT)
        pairs = rng.integers(0, len(PAIRS), TRADES_PER_BOT)
        for i in range(TRADES_PER_BOT):
            opened = start + timedelta(minutes=float(opens[i]))
            ratio = float(ratios[i])
            records.append(
                (
                    uuid.UUID(bot_id), i + 1, PAIRS[int(pairs[i])], False, False, opened,
                    opened + timedelta(minutes=float(held[i])), 100.0, 100.0 * (1 + ratio), 1.0, 100.0,
                    round(100.0 * ratio, 8), ratio, "exit_signal",
                )
            )  # fmt: skip
    await conn.copy_records_to_table(
        "trades",
        records=records,
        columns=[
            "bot_id", "trade_id", "pair", "is_short", "is_open", "open_date", "close_date", "open_rate",
            "close_rate", "amount", "stake_amount", "profit_abs", "profit_ratio", "exit_reason",
        ],
    )  # fmt: skip
    await conn.execute("ANALYZE trades")
    return token, bot_ids


async def cold(
    row: Row, server: Server, backends: Backends, raw: bytes, bump: Callable[[], Awaitable[object]], n: int
) -> None:
    """``n`` requests one at a time, each after the answer was made stale (as a new trade makes it)."""
    cpu, back = server.cpu_seconds(), backends.snapshot()
    conns = await open_connections(server.port, 1)
    try:
        for _ in range(n):
            await bump()
            started = time.perf_counter()
            status, body = await exchange(conns[0], raw)
            row.latencies.append((time.perf_counter() - started) * 1000)
            if status != 200:
                raise BenchError(f"answered {status}: {body[:300]!r}")
    finally:
        await close_connections(conns)
    row.cpu_us.append((server.cpu_seconds() - cpu) / n * 1e6)
    row.db_us.append(Backends.spent(back, backends.snapshot())[0] / n * 1e6)


async def cached(row: Row, server: Server, backends: Backends, raw: bytes, n: int) -> None:
    """Latency one request at a time (as the cold and SQL rows), then throughput over ``CONCURRENCY``."""
    await drive(server.port, raw, 200, max(50, n // 10), CONCURRENCY)
    cpu, back = server.cpu_seconds(), backends.snapshot()
    _, latencies = await drive(server.port, raw, 200, n // 4, 1)
    row.latencies += latencies
    row.cpu_us.append((server.cpu_seconds() - cpu) / (n // 4) * 1e6)
    row.db_us.append(Backends.spent(back, backends.snapshot())[0] / (n // 4) * 1e6)
    elapsed, _ = await drive(server.port, raw, 200, n, CONCURRENCY)
    row.rps.append(n / elapsed)


async def sql(row: Row, conn: asyncpg.Connection, query: str, backends: Backends, n: int) -> None:
    back = backends.snapshot()
    for _ in range(n):
        started = time.perf_counter()
        await conn.fetch(query)
        row.latencies.append((time.perf_counter() - started) * 1000)
    row.db_us.append(Backends.spent(back, backends.snapshot())[0] / n * 1e6)


async def bench(profile: Profile, workdir: Path, pg: EmbeddedPostgres, valkey: EmbeddedValkey) -> None:
    settings = ManagementSettings(
        env=Environment.test,
        data_dir=workdir / "data",
        database_url=SecretStr(pg.url()),
        redis_url=SecretStr(valkey.url),
    )
    password = secrets.token_urlsafe(18)
    engine = db.create_engine(settings)
    async with db.create_sessionmaker(engine).begin() as session:
        await create_user(session, build_hasher(settings), EMAIL, password, Role.admin)
    await engine.dispose()
    server = AuthServer("management", workdir, server_env(workdir, pg.url(), valkey.url))
    backends = Backends.of(pg, valkey)
    redis = create_redis(valkey.url)
    url = make_url(pg.url())
    conn = await asyncpg.connect(
        host=url.query["host"], user=url.username, password=url.password, database=url.database
    )
    try:
        server.start()
        await server.wait_started()
        seeded = time.perf_counter()
        token, bot_ids = await seed(conn, server.port, password)
        seconds_to_seed = time.perf_counter() - seeded
        fleet = raw_get(server.port, FLEET_PATH, token)
        bot = raw_get(server.port, f"/api/v1/analytics/bots/{bot_ids[0]}", token)
        status, body = await request_once(server.port, fleet, timeout=REQUEST_TIMEOUT * 6)
        if status != 200:
            raise BenchError(f"answered {status}: {body[:300]!r}")
        answer = json.loads(body)
        if (answer["bot_count"], answer["closed_trade_count"]) != (BOTS, BOTS * TRADES_PER_BOT):
            raise BenchError(
                f"the fleet answer counts {answer['bot_count']} bots, {answer['closed_trade_count']} trades"
            )
        totals = await conn.fetchrow(SUM_SQL)
        if totals is None or abs(float(totals[3]) - answer["profit_abs"]) > 1e-3:
            raise BenchError("the SQL total and the API's profit differ")

        async def bump_fleet() -> object:
            return await redis.incr(f"{PREFIX}:version:fleet")

        async def bump_bot() -> object:
            return await redis.incr(f"{PREFIX}:version:bot:{bot_ids[0]}")

        rows = {
            "sql": Row("bare SQL  aggregate of all trades (1 row)"),
            "sql_bots": Row("bare SQL  aggregate per bot (100 rows)"),
            "cold": Row("ours      /analytics/fleet cold"),
            "cached": Row("ours      /analytics/fleet cached"),
            "bot_cold": Row("ours      /analytics/bots/{id} cold"),
            "bot_cached": Row("ours      /analytics/bots/{id} cached"),
        }
        await cold(Row("warm-up"), server, backends, fleet, bump_fleet, 2)
        await sql(Row("warm-up"), conn, SUM_SQL, backends, 2)
        watch = OutsideWatch([server], backends)
        for _ in range(profile.rounds):
            await sql(rows["sql"], conn, SUM_SQL, backends, profile.sql)
            await sql(rows["sql_bots"], conn, PER_BOT_SQL, backends, profile.sql)
            await cold(rows["cold"], server, backends, fleet, bump_fleet, profile.cold)
            await cached(rows["cached"], server, backends, fleet, profile.cached)
            await cold(rows["bot_cold"], server, backends, bot, bump_bot, profile.cold)
            await cached(rows["bot_cached"], server, backends, bot, profile.cached)
        print(report(rows, profile, len(body), seconds_to_seed, watch.outside()), flush=True)
    finally:
        await conn.close()
        await redis.aclose()
        server.stop()


def report(rows: dict[str, Row], profile: Profile, size: int, seeding: float, outside: Outside) -> str:
    base = rows["sql"].p(50)
    lines = [
        f"Analytics: GET /api/v1/analytics/fleet over {BOTS} bots x {TRADES_PER_BOT} closed trades, against a bare SQL"
        " aggregate of the same trades",
        f"  seeded in {seeding:.1f} s (100 bots through the API, 100,000 trades with COPY); fleet answer"
        f" {size / 1024:.0f} KiB of JSON (100 bot lines, 500-point equity curve, daily P&L)",
        f"  latencies one request at a time: cold {profile.cold} per round, the cache made stale before each; cached"
        f" {profile.cached // 4}; SQL {profile.sql} runs of each query over asyncpg, in this process. req/s of the"
        f" cached answers: {profile.cached} requests over {CONCURRENCY} keep-alive connections. {profile.rounds}"
        " round(s); percentiles over all rounds",
        f"  server: {server_stack()}; management server as in production (JSON logs to a file), rate limits off",
        "",
        f"  {'target':<42} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7} {'/ SQL p50':>9} {'srv CPU ms/req':>14}"
        f" {'db CPU ms/req':>13}",
    ]
    for row in rows.values():
        rps = f"{statistics.median(row.rps):.0f}" if row.rps else "-"
        cpu = f"{statistics.median(row.cpu_us) / 1000:.2f}" if row.cpu_us else "-"
        lines.append(
            f"  {row.label:<42} {row.p(50):>8.2f} {row.p(99):>8.2f} {rps:>7} {row.p(50) / base:>9.2f} {cpu:>14}"
            f" {statistics.median(row.db_us) / 1000:>13.2f}"
        )
    lines += [
        "",
        "  SQL rows: PostgreSQL's own time for sums and counts (no drawdown, Sharpe, Sortino, Calmar, curve).",
        "  cold = read 100,000 trades + every figure of the fleet and of each bot + JSON + Redis; cached = one",
        "  Redis round trip (version and answer) and the stored JSON sent as is.",
        outside.line(steal=False),
    ]
    return "\n".join(lines)


def run(quick: bool = False) -> None:
    """Run the benchmark and print its table (``bench.run`` calls this)."""
    profile = QUICK if quick else FULL
    run_on_servers("analytics", lambda workdir, pg, valkey: bench(profile, workdir, pg, valkey))


if __name__ == "__main__":
    run(quick="--quick" in sys.argv[1:])
