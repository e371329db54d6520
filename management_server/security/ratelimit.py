"""Request rate limits in Redis: per client IP on every HTTP request, per user after authentication.

The counting is the ``limits`` library's *moving window* (exact: each hit is a timestamp in a Redis list
of at most ``limit`` entries, so ``Retry-After`` is exactly when the oldest hit in the window leaves it),
run by its async Redis storage on redis-py (``implementation="redispy"``, no ``coredis``) over the
connection pool of our own client. Keys live under ``freqfleet:ratelimit:`` and expire with their window.

Limits are strings such as ``"300/minute"`` or ``"20 per 10 seconds"`` (``limits.parse`` syntax), set by
``FREQFLEET_RATE_LIMIT_PER_IP`` and ``FREQFLEET_RATE_LIMIT_PER_USER``.

**Redis down: fail open.** These limits guard capacity, not secrets, so when Redis does not answer (an
error, or no answer within ``timeout`` seconds) :meth:`RateLimiter.check_ip` and
:meth:`RateLimiter.check_user` let the request through and log one warning per 30 seconds at most, rather
than turn a Redis outage into a full API outage. (The login throttle, which guards passwords, does the
opposite: see ``login_throttle``.)

Wiring: build a :class:`RateLimiter` in the lifespan as ``app.state.rate_limiter``, add
:class:`RateLimitMiddleware` (per IP) and call :func:`enforce_user_limit` once the user is known.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis.asyncio as aioredis
from fastapi import HTTPException, Request
from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.exceptions import RedisError
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from management_server.config import ManagementSettings
from shared.gateway_requests import HEADER as GATEWAY_HEADER
from shared.gateway_requests import claimed_gateway, vouched
from shared.logging import get_logger
from shared.redis import create_redis

log = get_logger(__name__)

KEY_PREFIX = "freqfleet:ratelimit"
EXEMPT_PATHS = frozenset({"/health/live", "/health/ready", "/metrics"})
WARNING_INTERVAL_SECONDS = 30.0
DEFAULT_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    allowed: bool
    retry_after: int
    """Whole seconds until a request would be allowed again; 0 when allowed."""
    remaining: int
    """Requests left in the current window after this one."""


@lru_cache(maxsize=64)
def parse_limit(limit: str) -> RateLimitItem:
    """``"300/minute"`` as a ``limits`` item (cached; raises ValueError on a string it can't read)."""
    return parse(limit)


def client_ip_key(ip: str) -> str:
    """The identity a client address is limited under.

    IPv4 as it is; an IPv4-mapped IPv6 address as its IPv4; any other IPv6 address as its /64, since one
    host usually holds a whole /64 and could otherwise get a fresh limit per address; anything that is not
    an address (a Unix socket peer, a test client) as given, cut to 64 characters.
    """
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ip.strip()[:64] or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def too_many_requests_detail(retry_after: int) -> str:
    return f"Too many requests: try again in {retry_after} second{'' if retry_after == 1 else 's'}."


class RateLimiter:
    """Moving-window limits in Redis.

    ``redis`` is either a client (the app's; it stays the caller's to close) or a Redis URL (a client is
    made and :meth:`aclose` closes it).
    """

    def __init__(
        self,
        redis: aioredis.Redis | str,
        settings: ManagementSettings,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        if isinstance(redis, str):
            self._redis = create_redis(redis, socket_timeout=timeout, retries=1)
            self._owns_redis = True
        else:
            self._redis = redis
            self._owns_redis = False
        self.enabled = settings.rate_limit_enabled
        self.per_ip = settings.rate_limit_per_ip
        self.per_user = settings.rate_limit_per_user
        parse_limit(self.per_ip)
        parse_limit(self.per_user)
        self.timeout = timeout
        # The storage wraps our client's connection pool; the URI only names the kind of server.
        options: dict[str, Any] = {"connection_pool": self._redis.connection_pool}
        storage = RedisStorage("async+redis://", implementation="redispy", key_prefix=KEY_PREFIX, **options)
        self._strategy = MovingWindowRateLimiter(storage)
        self._last_warning = -math.inf

    async def hit(self, scope: str, key: str, limit: str) -> RateLimitResult:
        """Count one request of ``key`` (an IP, a user id...) in ``scope`` against ``limit``.

        A refused request is not counted. Redis errors propagate (``check_ip``/``check_user`` fail open).
        """
        item = parse_limit(limit)
        allowed = await self._strategy.hit(item, scope, key)
        stats = await self._strategy.get_window_stats(item, scope, key)
        if allowed:
            return RateLimitResult(allowed=True, retry_after=0, remaining=max(0, stats.remaining))
        return RateLimitResult(
            allowed=False, retry_after=max(1, math.ceil(stats.reset_time - time.time())), remaining=0
        )

    async def check_ip(self, ip: str) -> RateLimitResult:
        """One request from ``ip`` (IPv6 counted per /64) against ``rate_limit_per_ip``; fails open."""
        return await self._guarded("ip", client_ip_key(ip), self.per_ip)

    async def check_user(self, user_id: str) -> RateLimitResult:
        """One request of an authenticated user against ``rate_limit_per_user``; fails open."""
        return await self._guarded("user", user_id, self.per_user)

    async def _guarded(self, scope: str, key: str, limit: str) -> RateLimitResult:
        if not self.enabled:
            return RateLimitResult(allowed=True, retry_after=0, remaining=parse_limit(limit).amount)
        try:
            return await asyncio.wait_for(self.hit(scope, key, limit), self.timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            now = time.monotonic()
            if now - self._last_warning >= WARNING_INTERVAL_SECONDS:
                self._last_warning = now
                log.warning(
                    "rate limiter unavailable: letting requests through",
                    scope=scope,
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )
            return RateLimitResult(allowed=True, retry_after=0, remaining=parse_limit(limit).amount)

    async def aclose(self) -> None:
        """Close the Redis client when this limiter made it."""
        if self._owns_redis:
            await self._redis.aclose()


def _limiter_of(app: object) -> RateLimiter | None:
    limiter = getattr(getattr(app, "state", None), "rate_limiter", None)
    return limiter if isinstance(limiter, RateLimiter) else None


class RateLimitMiddleware:
    """Pure ASGI: every HTTP request counts against its client IP's limit (``scope["client"]``, which
    uvicorn's proxy-headers handling rewrites when it trusts a proxy); health probes and ``/metrics`` are
    exempt. Over the limit, a JSON 429 with ``Retry-After``. The limiter is ``app.state.rate_limiter``
    (made in the lifespan); without one, or when Redis does not answer, requests go through.
    """

    def __init__(self, app: ASGIApp, exempt_paths: frozenset[str] = EXEMPT_PATHS) -> None:
        self.app = app
        self.exempt_paths = exempt_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "") in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        limiter = _limiter_of(scope.get("app"))
        if limiter is None:
            await self.app(scope, receive, send)
            return
        if await _vouched_by_a_gateway(scope):
            # An enrolled gateway's MCP tool, calling as one of its users: the user's own limit applies (in the
            # auth dependency), not the gateway's address, which all its agents share.
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        result = await limiter.check_ip(client[0] if client else "unknown")
        if result.allowed:
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            {"detail": too_many_requests_detail(result.retry_after)},
            status_code=429,
            headers={"Retry-After": str(result.retry_after)},
        )
        await response(scope, receive, send)


async def _vouched_by_a_gateway(scope: Scope) -> bool:
    headers = Headers(scope=scope)
    value = headers.get(GATEWAY_HEADER)
    if not value:
        return False
    gateway_id = claimed_gateway(value)
    keys = getattr(getattr(scope.get("app"), "state", None), "event_signatures", None)
    if gateway_id is None or keys is None:
        return False
    try:
        public = await keys.enrolled_key(gateway_id)
    except Exception as exc:  # the database: count the request per IP, as any other
        log.warning("gateway's request signature not checked", error=f"{type(exc).__name__}: {exc}")
        return False
    authorization = headers.get("authorization", "")
    return public is not None and vouched(public, value, scope.get("method", ""), authorization)


async def enforce_user_limit(request: Request, user_id: str) -> None:
    """Count this request against the user's limit; raise a 429 with ``Retry-After`` over it.

    Call it from the auth dependency once the user is known. Without ``app.state.rate_limiter`` it does
    nothing; when Redis does not answer it lets the request through (see the module docstring).
    """
    limiter = _limiter_of(request.app)
    if limiter is None:
        return
    result = await limiter.check_user(user_id)
    if not result.allowed:
        raise HTTPException(
            status_code=429,
            detail=too_many_requests_detail(result.retry_after),
            headers={"Retry-After": str(result.retry_after)},
        )
