"""Token verification, login and authenticated requests, each against a baseline in the same run.

Everything runs on a real embedded PostgreSQL (migrated to head) and Valkey in a temporary folder,
with one user created through ``management_server.users.service.create_user``. Three parts:

1. **Verification in this process**, µs per token (median over rounds, targets alternated): the
   baseline is ``jwt.decode`` with the public key, ``EdDSA``, audience and issuer; ours is
   ``TokenVerifier(StaticKeySource(...))`` (header and ``kid``, decode with the required claims, the
   claims object) without revocation, and with the ``RevocationStore`` on Valkey (one pipelined round
   trip). The token is an access token signed by ``AuthService.access_token`` (``sign_token`` with the
   server's ``KeyRing``). Reference rows without a ratio: the revocation check alone and loading the
   user from PostgreSQL in a fresh session, as the management server does on every request.
2. **Login**: ``AuthService.authenticate`` (built as ``management_server.main`` builds it) with the
   right password, a wrong one and an unknown email, interleaved, beside a bare argon2 verify. The
   unknown email verifies against a dummy hash, so it should take as long as a wrong password.
3. **HTTP**: a bare ``FastAPI()`` route against the real management server (``bench._auth_server``),
   each under uvicorn in its own process: ``/health/live`` (our plumbing, no auth), the authenticated
   ``GET /api/v1/users/me`` with a Bearer access token obtained by ``POST /api/v1/auth/token``, and the
   same route with a token whose signature is broken (a 401 and an audit row). The per-IP and per-user
   request rate limits are off (``FREQFLEET_RATE_LIMIT_ENABLED=false``): they would cap the load. The
   load generator is ``bench._common``'s (raw HTTP/1.1 over keep-alive connections, here
   with an ``Authorization`` header; fixed concurrency, fixed request count after a warm-up, targets
   alternated), and the server's CPU time per request is read from the kernel (psutil).

    python -m bench.run auth          (or: python -m bench.auth [--quick])
"""

from __future__ import annotations

import json
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from bench._auth_server import BARE_BODY, BARE_PATH
from bench._common import (
    AuthServer,
    Backends,
    BenchError,
    Outside,
    OutsideWatch,
    Result,
    alternated,
    drive,
    login_over_http,
    measure_server,
    percentile,
    raw_get,
    request_once,
    running,
    server_env,
    server_stack,
)
from bench._servers import run_on_servers
from freqfleet.embedded import EmbeddedPostgres, EmbeddedValkey
from management_server import db
from management_server.auth.service import AuthError, AuthService
from management_server.config import ManagementSettings
from management_server.main import load_keys
from management_server.security.keys import KeyRing
from management_server.security.passwords import build_hasher, verify_password
from management_server.users.models import User
from management_server.users.service import create_user
from shared.auth import RevocationStore, StaticKeySource, TokenType, TokenVerifier
from shared.auth.claims import ALGORITHM
from shared.redis import create_redis
from shared.settings import Environment

EMAIL = "bench-user@example.com"
UNKNOWN_EMAIL = "nobody@example.com"
ME_PATH = "/api/v1/users/me"
# Keep-alive connections of the HTTP load. Within the management server's database pool (pool_size 10 by
# default): with more requests in flight than that, SQLAlchemy opens overflow connections and closes them
# again when they come back, so each burst starts new PostgreSQL backends, which is another measurement.
CONCURRENCY = 8


@dataclass(frozen=True)
class Profile:
    micro_rounds: int
    micro_ops: int
    logins: int
    http_rounds: int
    requests: int
    warmup: int
    first_warmup: int


FULL = Profile(micro_rounds=5, micro_ops=1000, logins=60, http_rounds=3, requests=3000, warmup=300, first_warmup=600)
QUICK = Profile(micro_rounds=3, micro_ops=300, logins=10, http_rounds=1, requests=600, warmup=100, first_warmup=200)


@dataclass
class Context:
    """The in-process side: settings, keys, services and the user, as the management server builds them."""

    settings: ManagementSettings
    keys: KeyRing
    hasher: PasswordHasher
    sessionmaker: async_sessionmaker[AsyncSession]
    revocations: RevocationStore
    auth: AuthService
    user: User
    password: str


# --- 1. verification in this process ----------------------------------------------------------------


@dataclass
class Micro:
    label: str
    op: Callable[[], Awaitable[object]]
    reference: bool = False
    per_op_us: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.per_op_us)


async def bench_verification(ctx: Context, pg_url: str, profile: Profile) -> list[Micro]:
    settings = ctx.settings
    token, _ = ctx.auth.access_token(ctx.user)
    public_key = ctx.keys.active.public
    plain = TokenVerifier(
        StaticKeySource(ctx.keys.public_keys()), issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )
    revoking = TokenVerifier(
        StaticKeySource(ctx.keys.public_keys()),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        revocations=ctx.revocations,
    )
    claims = await revoking.verify(token)
    if claims.subject != ctx.user.id:
        raise BenchError(f"the token names {claims.subject}, not the user {ctx.user.id}")
    # The same pool settings as management_server.db.create_engine, but without the ping at checkout.
    no_ping = create_async_engine(
        pg_url,
        pool_size=settings.database_pool_size,
        pool_pre_ping=False,
        connect_args={"timeout": 5, "server_settings": {"application_name": "freqfleet"}},
    )
    no_ping_sessions = db.create_sessionmaker(no_ping)

    async def baseline() -> object:
        return jwt.decode(
            token, public_key, algorithms=[ALGORITHM], audience=settings.jwt_audience, issuer=settings.jwt_issuer
        )

    def load_user(sessions: async_sessionmaker[AsyncSession]) -> Callable[[], Awaitable[object]]:
        async def op() -> object:
            async with sessions() as session:
                user = await session.get(User, ctx.user.id)
            if user is None:
                raise BenchError("the user is gone")
            return user

        return op

    micros = [
        Micro("baseline  jwt.decode (EdDSA, aud, iss)", baseline),
        Micro("ours      TokenVerifier, no revocation", lambda: plain.verify(token)),
        Micro("ours      TokenVerifier + RevocationStore", lambda: revoking.verify(token)),
        Micro("reference revocation check alone (1 RTT)", lambda: ctx.revocations.revocation_reason(claims), True),
        Micro("reference load user, pool_pre_ping on", load_user(ctx.sessionmaker), True),
        Micro("reference load user, pool_pre_ping off", load_user(no_ping_sessions), True),
    ]
    try:
        for micro in micros:  # warm-up: prepared statements, connections, caches
            for _ in range(max(20, profile.micro_ops // 10)):
                await micro.op()
        for micro in alternated(micros, profile.micro_rounds):
            started, cpu_started = time.perf_counter(), time.process_time()
            for _ in range(profile.micro_ops):
                await micro.op()
            micro.per_op_us.append((time.perf_counter() - started) / profile.micro_ops * 1e6)
            micro.cpu_us.append((time.process_time() - cpu_started) / profile.micro_ops * 1e6)
    finally:
        await no_ping.dispose()
    return micros


def report_verification(micros: list[Micro], profile: Profile) -> str:
    base = micros[0].median
    lines = [
        "1. Token verification in this process: an access token signed by AuthService.access_token (Ed25519)",
        f"   us per token: median of {profile.micro_rounds} round(s) of {profile.micro_ops}, targets alternated",
        "",
        f"  {'target':<44} {'us/op':>7} {'(min-max)':>13} {'/ baseline':>10} {'CPU us/op':>9}",
    ]
    for m in micros:
        spread = f"({min(m.per_op_us):.0f}-{max(m.per_op_us):.0f})"
        ratio = "" if m.reference else f"{m.median / base:.2f}"
        cpu = statistics.median(m.cpu_us)
        lines.append(f"  {m.label:<44} {m.median:>7.1f} {spread:>13} {ratio:>10} {cpu:>9.1f}")
    lines += [
        "",
        "  us/op is wall time; CPU us/op is this process's CPU time (what the server would spend), without",
        "  Valkey's and PostgreSQL's.",
        "  'load user' is what get_principal does after verifying: a fresh session, session.get(User), close;",
        "  the engine is management_server.db.create_engine's (pool_pre_ping on) or the same without the ping.",
    ]
    return "\n".join(line.rstrip() for line in lines)


# --- 2. login ---------------------------------------------------------------------------------------

LOGIN_PATHS = ("argon2", "right", "wrong", "unknown")
LOGIN_LABELS = {
    "argon2": "baseline  argon2 verify alone (wrong pw)",
    "right": "ours      authenticate, right password",
    "wrong": "ours      authenticate, wrong password",
    "unknown": "ours      authenticate, unknown email",
}
EXPECTED_OUTCOME = {"argon2": "refused", "right": "ok", "wrong": "wrong password", "unknown": "unknown email"}


async def bench_login(ctx: Context, profile: Profile) -> dict[str, list[float]]:
    wrong_password = ctx.password + "-wrong"

    async def attempt(path: str) -> float:
        if path == "argon2":
            started = time.perf_counter()
            ok = verify_password(ctx.hasher, ctx.user.password_hash, wrong_password)
            elapsed = time.perf_counter() - started
            outcome = "ok" if ok else "refused"
        else:
            email = UNKNOWN_EMAIL if path == "unknown" else EMAIL
            password = ctx.password if path == "right" else wrong_password
            async with ctx.sessionmaker() as session:
                started = time.perf_counter()
                try:
                    await ctx.auth.authenticate(session, email, password)
                    outcome = "ok"
                except AuthError as exc:
                    outcome = exc.reason
                elapsed = time.perf_counter() - started
        if outcome != EXPECTED_OUTCOME[path]:
            raise BenchError(f"login path {path!r} ended in {outcome!r}, not {EXPECTED_OUTCOME[path]!r}")
        return elapsed * 1000

    for path in LOGIN_PATHS:  # warm-up
        await attempt(path)
    times: dict[str, list[float]] = {path: [] for path in LOGIN_PATHS}
    for path in alternated(LOGIN_PATHS, profile.logins):
        times[path].append(await attempt(path))
    return times


def report_login(times: dict[str, list[float]], ctx: Context) -> str:
    s = ctx.settings
    med = {p: statistics.median(v) for p, v in times.items()}
    p90 = {p: percentile(sorted(v), 90) for p, v in times.items()}
    n = len(times["argon2"])
    lines = [
        f"2. Login: AuthService.authenticate in a fresh session, {n} attempts per path, interleaved",
        f"   argon2id time_cost={s.argon2_time_cost}, memory_cost={s.argon2_memory_cost_kib} KiB,"
        f" parallelism={s.argon2_parallelism} (the defaults)",
        "",
        f"  {'path':<44} {'median ms':>9} {'p90 ms':>8} {'min ms':>8} {'max ms':>8} {'/ baseline':>10}",
    ]
    for path in LOGIN_PATHS:
        values = times[path]
        ratio = "" if path == "argon2" else f"{med[path] / med['argon2']:.2f}"
        lines.append(
            f"  {LOGIN_LABELS[path]:<44} {med[path]:>9.2f} {p90[path]:>8.2f} {min(values):>8.2f}"
            f" {max(values):>8.2f} {ratio:>10}"
        )
    lines += [
        "",
        f"  equal time, unknown email / wrong password: median {med['unknown'] / med['wrong']:.3f},"
        f" p90 {p90['unknown'] / p90['wrong']:.3f}",
        "  (the unknown email verifies the password against a dummy argon2 hash of the same parameters)",
    ]
    return "\n".join(line.rstrip() for line in lines)


# --- 3. HTTP ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    server: str
    path: str
    token: str  # "", "good" or "bad"
    status: int


TARGETS = (
    Target("baseline", "baseline  bare FastAPI  GET /bench/bare", "bare", BARE_PATH, "", 200),
    Target("plumbing", "ours      management  GET /health/live", "management", "/health/live", "", 200),
    Target("me", "ours      management  GET /users/me", "management", ME_PATH, "good", 200),
    Target("refused", "ours      management  /users/me bad token", "management", ME_PATH, "bad", 401),
)


def tamper(token: str) -> str:
    """The token with one character of its signature changed: it decodes, but does not verify."""
    head, payload, signature = token.split(".")
    i = len(signature) // 2
    swapped = "A" if signature[i] != "A" else "B"
    return f"{head}.{payload}.{signature[:i]}{swapped}{signature[i + 1 :]}"


async def check(port: int, raw: bytes, target: Target) -> None:
    status, body = await request_once(port, raw)
    data: Any = json.loads(body)
    good = (
        status == target.status
        and {
            "baseline": data == BARE_BODY,
            "plumbing": isinstance(data, dict) and data.get("status") == "ok",
            "me": isinstance(data, dict) and data.get("email") == EMAIL,
            "refused": isinstance(data, dict) and "detail" in data,
        }[target.key]
    )
    if not good:
        raise BenchError(f"{target.label.split()[-1]} answered {status} {body[:200]!r}: not what we measure")


async def bench_http(
    ctx: Context, profile: Profile, workdir: Path, pg: EmbeddedPostgres, valkey: EmbeddedValkey
) -> tuple[list[Result[Target]], Outside]:
    env = server_env(workdir, pg.url(), valkey.url)
    servers = {kind: AuthServer(kind, workdir, env) for kind in ("bare", "management")}
    backends = Backends.of(pg, valkey)
    async with running(servers.values()):
        token = await login_over_http(servers["management"].port, EMAIL, ctx.password)
        tokens = {"": None, "good": token, "bad": tamper(token)}
        raws = {t.key: raw_get(servers[t.server].port, t.path, tokens[t.token]) for t in TARGETS}
        for target in TARGETS:
            await check(servers[target.server].port, raws[target.key], target)
            await drive(servers[target.server].port, raws[target.key], target.status, profile.first_warmup, CONCURRENCY)
        results = [Result(t) for t in TARGETS]
        watch = OutsideWatch(list(servers.values()), backends)
        for result in alternated(results, profile.http_rounds):
            target = result.target
            raw, server = raws[target.key], servers[target.server]
            result.rounds.append(await measure_server(server, backends, raw, target.status, profile, CONCURRENCY))
        return results, watch.outside()


def report_http(results: list[Result[Target]], outside: Outside, profile: Profile, settings: ManagementSettings) -> str:
    base = results[0]
    lines = [
        "3. HTTP: the management server's authenticated GET /api/v1/users/me against a bare FastAPI route",
        f"  {profile.requests} GETs per round after {profile.warmup} warm-up, {CONCURRENCY} keep-alive connections,"
        f" {profile.http_rounds} round(s), targets alternated; medians over rounds",
        f"  servers: {server_stack()}, one process each",
        "  management server: env=production, JSON logs to a file; per-IP and per-user request rate limits OFF",
        f"  (FREQFLEET_RATE_LIMIT_ENABLED=false: they would cap the load at {settings.rate_limit_per_ip} per IP"
        f" and {settings.rate_limit_per_user} per user)",
        f"  {CONCURRENCY} connections stay within the server's database pool (10): no overflow connections",
        "  'db CPU' is PostgreSQL's (all its processes) plus Valkey's, per request",
        "",
        f"  {'target':<40} {'req/s':>6} {'(min-max)':>11} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
        f" {'srv CPU us/req':>14} {'db CPU us/req':>13} {'log B/req':>9}",
    ]
    for r in results:
        lines.append(
            r.row(40) + f" {r.median('cpu_us'):>14.0f} {r.median('backend_us'):>13.0f} {r.median('log_bytes'):>9.0f}"
        )
    lines += [
        "",
        f"  {'ours / baseline':<40} {'req/s':>6} {'p50':>7} {'p99':>7} {'srv CPU/req':>12} {'added srv CPU us':>17}",
    ]
    lines += [r.against(base, 40) for r in results[1:]]
    by_key = {r.target.key: r for r in results}
    auth_cost = by_key["me"].median("cpu_us") - by_key["plumbing"].median("cpu_us")
    new_procs = sum(x.new_backend_procs for r in results for x in r.rounds)
    lines += [
        "",
        f"  /users/me minus /health/live on the same server: {auth_cost:.0f} us of server CPU per request",
        "  (token verification, user and token version loaded from PostgreSQL, response model, and one",
        "  JSON access-log line: /health/live is a quiet path of the access log).",
        "  The bad token is refused after the signature check: a 401, one audit row written in its own",
        "  transaction, an 'audit' and an access-log line.",
        f"  PostgreSQL/Valkey processes started during the measured requests: {new_procs}",
        outside.line(),
    ]
    return "\n".join(line.rstrip() for line in lines)


# --- orchestration ----------------------------------------------------------------------------------


async def setup(workdir: Path, pg_url: str, redis_url: str) -> tuple[Context, Callable[[], Awaitable[None]]]:
    settings = ManagementSettings(
        env=Environment.test,
        data_dir=workdir / "data",
        database_url=SecretStr(pg_url),
        redis_url=SecretStr(redis_url),
    )
    engine = db.create_engine(settings)
    redis = create_redis(redis_url)
    hasher = build_hasher(settings)
    keys = load_keys(settings)
    revocations = RevocationStore(redis)
    auth = AuthService(settings, keys, hasher, revocations)
    sessionmaker = db.create_sessionmaker(engine)
    password = secrets.token_urlsafe(18)
    async with sessionmaker.begin() as session:
        user = await create_user(session, hasher, EMAIL, password)
    await revocations.set_version(user.id, TokenType.access, user.access_token_version)
    await revocations.set_version(user.id, TokenType.pat, user.pat_version)

    async def close() -> None:
        await redis.aclose()
        await engine.dispose()

    ctx = Context(settings, keys, hasher, sessionmaker, revocations, auth, user, password)
    return ctx, close


async def bench(profile: Profile, workdir: Path, pg: EmbeddedPostgres, valkey: EmbeddedValkey) -> None:
    ctx, close = await setup(workdir, pg.url(), valkey.url)
    try:
        micros = await bench_verification(ctx, pg.url(), profile)
        print(report_verification(micros, profile), flush=True)
        times = await bench_login(ctx, profile)
        print("\n" + report_login(times, ctx), flush=True)
        results, outside = await bench_http(ctx, profile, workdir, pg, valkey)
        print("\n" + report_http(results, outside, profile, ctx.settings), flush=True)
    finally:
        await close()


def run(quick: bool = False) -> None:
    """Run the benchmark and print its tables (``bench.run`` calls this)."""
    profile = QUICK if quick else FULL
    run_on_servers("auth", lambda workdir, pg, valkey: bench(profile, workdir, pg, valkey))


if __name__ == "__main__":
    run(quick="--quick" in sys.argv[1:])
