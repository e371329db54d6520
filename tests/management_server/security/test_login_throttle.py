"""The login throttle against a real Valkey: growing delays per (account, IP), per IP and per account,
the known-IP bypass, success clearing the pair, no email in Redis and nothing kept forever."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.exceptions import ConnectionError as RedisConnectionError

from management_server.config import ManagementSettings
from management_server.security.login_throttle import (
    KEY_PREFIX,
    LoginThrottle,
    LoginThrottled,
    email_digest,
)
from shared.settings import Environment
from tests.helpers import async_wait_for, free_port

EMAIL = "alice@example.com"
HOME = "198.51.100.7"
ATTACKER = "203.0.113.66"


@pytest_asyncio.fixture(loop_scope="session")
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def _throttle(redis: aioredis.Redis, **overrides: Any) -> LoginThrottle:
    values: dict[str, Any] = {
        "login_max_failures_per_account_ip": 3,
        "login_max_failures_per_ip": 50,
        "login_account_soft_limit": 20,
        "login_max_delay_seconds": 900,
        **overrides,
    }
    return LoginThrottle(
        redis, ManagementSettings(env=Environment.test, redis_url=SecretStr("redis://unused"), **values)
    )


async def _retry_after(throttle: LoginThrottle, email: str, ip: str) -> int:
    """0 when the login may go ahead, otherwise the wait it was given."""
    try:
        await throttle.check(email, ip)
    except LoginThrottled as throttled:
        return throttled.retry_after
    return 0


async def test_the_nth_failure_makes_the_next_try_wait_and_the_waits_double(redis: aioredis.Redis) -> None:
    throttle = _throttle(redis)
    for _ in range(2):
        assert await _retry_after(throttle, EMAIL, ATTACKER) == 0
        await throttle.failed(EMAIL, ATTACKER)
    assert await _retry_after(throttle, EMAIL, ATTACKER) == 0
    await throttle.failed(EMAIL, ATTACKER)  # the 3rd (N-th) failure

    with pytest.raises(LoginThrottled) as throttled:
        await throttle.check(EMAIL, ATTACKER)
    assert throttled.value.retry_after == 2
    # Each further failure (a try after the wait) doubles the wait.
    waits = []
    for _ in range(4):
        await throttle.failed(EMAIL, ATTACKER)
        waits.append(await _retry_after(throttle, EMAIL, ATTACKER))
    assert waits == [4, 8, 16, 32]

    # The right password from another IP, and another account from this IP, still go ahead.
    assert await _retry_after(throttle, EMAIL, HOME) == 0
    assert await _retry_after(throttle, "bob@example.com", ATTACKER) == 0


async def test_waits_stop_growing_at_the_maximum(redis: aioredis.Redis) -> None:
    throttle = _throttle(redis, login_max_delay_seconds=20)
    for _ in range(10):
        await throttle.failed(EMAIL, ATTACKER)
    assert await _retry_after(throttle, EMAIL, ATTACKER) == 20


async def test_a_success_clears_the_pairs_failures(redis: aioredis.Redis) -> None:
    throttle = _throttle(redis)
    for _ in range(3):
        await throttle.failed(EMAIL, HOME)
    assert await _retry_after(throttle, EMAIL, HOME) == 2

    await throttle.succeeded(EMAIL, HOME)
    assert await _retry_after(throttle, EMAIL, HOME) == 0
    # Counting starts again from zero: two more failures are not enough for a wait.
    for _ in range(2):
        await throttle.failed(EMAIL, HOME)
    assert await _retry_after(throttle, EMAIL, HOME) == 0


async def test_after_a_wait_one_try_goes_ahead_and_holds_the_next_one_back(redis: aioredis.Redis) -> None:
    throttle = _throttle(redis, login_max_delay_seconds=1)
    for _ in range(3):
        await throttle.failed(EMAIL, ATTACKER)
    assert await _retry_after(throttle, EMAIL, ATTACKER) == 1

    started = time.monotonic()

    async def let_through() -> bool:
        return await _retry_after(throttle, EMAIL, ATTACKER) == 0

    await async_wait_for(let_through, timeout=5, interval=0.05, what="the wait to end")
    assert time.monotonic() - started <= 1.5
    # A second, concurrent try does not slip through the same opening.
    assert await _retry_after(throttle, EMAIL, ATTACKER) == 1


async def test_one_ip_failing_on_many_accounts_is_made_to_wait(redis: aioredis.Redis) -> None:
    throttle = _throttle(redis, login_max_failures_per_ip=4)
    for i in range(3):
        await throttle.failed(f"user{i}@example.com", ATTACKER)
    assert await _retry_after(throttle, "someone@example.com", ATTACKER) == 0
    await throttle.failed("user3@example.com", ATTACKER)  # the 4th failure from this IP

    assert await _retry_after(throttle, "someone@example.com", ATTACKER) == 2
    assert await _retry_after(throttle, "someone@example.com", "203.0.113.67") == 0


async def test_a_distributed_attack_delays_new_ips_but_not_the_ones_the_user_signs_in_from(
    redis: aioredis.Redis,
) -> None:
    throttle = _throttle(redis, login_account_soft_limit=5)
    await throttle.succeeded(EMAIL, HOME)

    # One failure from each of many addresses: no pair and no IP reaches its own limit.
    for i in range(4):
        await throttle.failed(EMAIL, f"203.0.113.{i}")
    # Below the soft limit, the right password from a place never seen before still goes ahead.
    assert await _retry_after(throttle, EMAIL, "192.0.2.1") == 0

    await throttle.failed(EMAIL, "203.0.113.4")  # the account's 5th failure in the hour
    assert await _retry_after(throttle, EMAIL, "192.0.2.1") == 2
    assert await _retry_after(throttle, EMAIL, "203.0.113.99") == 2
    # The user's usual place is not held back, and other accounts are not affected.
    assert await _retry_after(throttle, EMAIL, HOME) == 0
    assert await _retry_after(throttle, "bob@example.com", "192.0.2.1") == 0

    await throttle.failed(EMAIL, "203.0.113.5")
    assert await _retry_after(throttle, EMAIL, "192.0.2.2") == 4

    # A place the user last signed in from more than 30 days ago counts as new.
    known_ips = f"{KEY_PREFIX}:account:{email_digest(EMAIL)}:known-ips"
    await redis.zadd(known_ips, {HOME: time.time() - 31 * 24 * 3600})
    assert await _retry_after(throttle, EMAIL, HOME) == 4


async def test_no_email_in_redis_keys_and_every_key_expires(redis: aioredis.Redis) -> None:
    throttle = _throttle(redis)
    for _ in range(3):
        await throttle.failed("  Alice@Example.COM ", ATTACKER)
    # The same account however it is typed.
    assert await _retry_after(throttle, "alice@example.com", ATTACKER) == 2
    await throttle.succeeded("ALICE@example.com", HOME)

    keys = [key.decode() async for key in redis.scan_iter(match="*")]
    assert keys
    assert all(key.startswith(f"{KEY_PREFIX}:") for key in keys)
    assert not [key for key in keys if "alice" in key.lower() or "example" in key.lower()]
    assert any(email_digest("alice@example.com") in key for key in keys)
    for key in keys:
        assert 0 < await redis.ttl(key) <= 30 * 24 * 3600, key


async def test_the_throttle_fails_closed_when_redis_is_down() -> None:
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        throttle = _throttle(dead)
        with pytest.raises(RedisConnectionError):
            await throttle.check(EMAIL, HOME)
    finally:
        await dead.aclose()
