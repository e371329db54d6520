"""Request rate limits against a real Valkey: per IP through the middleware over real HTTP, per user
through ``enforce_user_limit``, and the limiter's API for several IPs and users."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI, Header, Request
from pydantic import SecretStr, ValidationError

from management_server.config import ManagementSettings
from management_server.security.ratelimit import (
    KEY_PREFIX,
    RateLimiter,
    RateLimitMiddleware,
    client_ip_key,
    enforce_user_limit,
)
from shared.settings import Environment
from tests.helpers import async_wait_for, free_port, serve


def _settings(redis_url: str, **overrides: Any) -> ManagementSettings:
    return ManagementSettings(env=Environment.test, redis_url=SecretStr(redis_url), **overrides)


def _app(settings: ManagementSettings, limiter_redis_url: str | None = None) -> FastAPI:
    """A tiny app wired like the real one: limiter in the lifespan, the middleware, a per-user route."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limiter = RateLimiter(limiter_redis_url or settings.redis_url.get_secret_value(), settings)
        app.state.rate_limiter = limiter
        try:
            yield
        finally:
            await limiter.aclose()

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(RateLimitMiddleware)

    @app.get("/api/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/me")
    async def me(request: Request, user: str = Header(alias="X-User")) -> dict[str, str]:
        await enforce_user_limit(request, user)
        return {"user": user}

    return app


def _client_from(url: str, address: str) -> httpx.AsyncClient:
    """A client whose connections come from ``address`` (any 127.x.y.z works on loopback)."""
    return httpx.AsyncClient(base_url=url, transport=httpx.AsyncHTTPTransport(local_address=address))


async def test_the_request_past_the_ip_limit_gets_429_with_retry_after_and_another_ip_does_not(
    redis_url: str,
) -> None:
    settings = _settings(redis_url, rate_limit_per_ip="3/minute")
    async with (
        serve(_app(settings)) as url,
        _client_from(url, "127.0.0.1") as one,
        _client_from(url, "127.0.0.2") as two,
    ):
        allowed = [await one.get("/api/ping") for _ in range(3)]
        refused = await one.get("/api/ping")
        other_ip = await two.get("/api/ping")
        probe = await one.get("/health/live")

    assert [r.status_code for r in allowed] == [200, 200, 200]
    assert refused.status_code == 429
    retry_after = int(refused.headers["Retry-After"])
    # The oldest of the 3 hits leaves the 60 s window in (just under) a minute.
    assert 55 <= retry_after <= 60
    assert refused.json() == {"detail": f"Too many requests: try again in {retry_after} seconds."}
    assert other_ip.status_code == 200
    # Health probes are never limited.
    assert probe.status_code == 200


async def test_a_refused_client_is_let_through_again_once_its_oldest_hit_leaves_the_window(redis_url: str) -> None:
    settings = _settings(redis_url, rate_limit_per_ip="2/second")
    async with serve(_app(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        assert [(await client.get("/api/ping")).status_code for _ in range(2)] == [200, 200]
        refused = await client.get("/api/ping")
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["detail"] == "Too many requests: try again in 1 second."

        async def allowed_again() -> bool:
            return (await client.get("/api/ping")).status_code == 200

        started = time.monotonic()
        await async_wait_for(allowed_again, timeout=5, interval=0.05, what="the window to move on")
        assert time.monotonic() - started <= 1.5


async def test_the_user_limit_refuses_one_user_and_not_another(redis_url: str) -> None:
    settings = _settings(redis_url, rate_limit_per_ip="100/minute", rate_limit_per_user="2/minute")
    async with serve(_app(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        first = [(await client.get("/api/me", headers={"X-User": "u-1"})).status_code for _ in range(2)]
        refused = await client.get("/api/me", headers={"X-User": "u-1"})
        other_user = await client.get("/api/me", headers={"X-User": "u-2"})

    assert first == [200, 200]
    assert refused.status_code == 429
    assert 55 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.json()["detail"].startswith("Too many requests: try again in ")
    assert other_user.status_code == 200
    assert other_user.json() == {"user": "u-2"}


async def test_the_limiter_counts_each_ip_and_each_user_apart(redis_url: str) -> None:
    limiter = RateLimiter(redis_url, _settings(redis_url, rate_limit_per_ip="3/minute", rate_limit_per_user="3/minute"))
    try:
        results = [await limiter.check_ip("10.0.0.1") for _ in range(4)]
        assert [(r.allowed, r.remaining) for r in results] == [(True, 2), (True, 1), (True, 0), (False, 0)]
        assert [r.retry_after for r in results[:3]] == [0, 0, 0]
        assert 55 <= results[3].retry_after <= 60

        assert (await limiter.check_ip("10.0.0.2")).allowed
        # Same string, other scope: a user id is not an IP.
        assert (await limiter.check_user("10.0.0.1")).allowed
        # A refused request is not counted: the window still holds 3 hits, not 4 or 5.
        assert (await limiter.check_ip("10.0.0.1")).allowed is False

        # One IPv6 /64 is one client.
        for _ in range(3):
            assert (await limiter.check_ip("2001:db8::1")).allowed
        assert (await limiter.check_ip("2001:db8::ffff")).allowed is False
        assert (await limiter.check_ip("2001:db8:0:1::1")).allowed
    finally:
        await limiter.aclose()


async def test_the_limiter_shares_the_apps_client_and_its_keys_expire(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    limiter = RateLimiter(redis, _settings(redis_url))
    try:
        result = await limiter.hit("custom", "k-1", "5 per 10 seconds")
        assert (result.allowed, result.remaining) == (True, 4)
        await limiter.aclose()  # not ours to close: the client keeps working
        keys = [key.decode() async for key in redis.scan_iter(match="*")]
        assert keys, "the hit left no key"
        assert all(key.startswith(f"{KEY_PREFIX}:") for key in keys)
        for key in keys:
            assert 0 < await redis.ttl(key) <= 10
    finally:
        await redis.aclose()


async def test_nothing_is_limited_or_stored_when_rate_limits_are_off(redis_url: str) -> None:
    settings = _settings(redis_url, rate_limit_enabled=False, rate_limit_per_ip="1/minute")
    async with serve(_app(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        statuses = [(await client.get("/api/ping")).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    redis = aioredis.Redis.from_url(redis_url)
    try:
        assert [key async for key in redis.scan_iter(match=f"{KEY_PREFIX}:*")] == []
    finally:
        await redis.aclose()


async def test_requests_go_through_with_one_warning_while_redis_is_down(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(redis_url, rate_limit_per_ip="1/minute", rate_limit_per_user="1/minute")
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    with caplog.at_level(logging.WARNING, logger="management_server.security.ratelimit"):
        async with (
            serve(_app(settings, limiter_redis_url=dead_redis)) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            ip_limited = [(await client.get("/api/ping")).status_code for _ in range(3)]
            user_limited = [(await client.get("/api/me", headers={"X-User": "u-1"})).status_code for _ in range(2)]

    assert ip_limited == [200, 200, 200]
    assert user_limited == [200, 200]
    warnings = [r for r in caplog.records if r.name == "management_server.security.ratelimit"]
    assert len(warnings) == 1
    assert "letting requests through" in str(warnings[0].msg)


async def test_an_app_without_a_limiter_is_not_limited() -> None:
    app = FastAPI()
    app.add_middleware(RateLimitMiddleware)

    @app.get("/api/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/api/ping")).status_code == 200


def test_limit_strings_are_checked_when_settings_load() -> None:
    with pytest.raises(ValidationError, match="rate_limit_per_ip"):
        ManagementSettings(rate_limit_per_ip="lots")
    assert ManagementSettings(rate_limit_per_user="20 per 10 seconds").rate_limit_per_user == "20 per 10 seconds"


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("testclient", "testclient"),
        ("", "unknown"),
    ],
)
def test_client_ip_keys(address: str, key: str) -> None:
    assert client_ip_key(address) == key
