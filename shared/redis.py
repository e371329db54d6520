"""Redis clients as every Freqfleet process builds them."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


def create_redis(url: str, *, socket_timeout: float | None = 5.0, retries: int = 3) -> aioredis.Redis:
    """A client that reconnects by itself: a command that meets a dropped connection (a
    Redis restart, a failover) is retried on a new one a few times, with jittered backoff,
    before the error reaches the caller. Retried XADDs may append twice; consumers
    recognise the duplicate by its ``event_id``."""
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=3,
        socket_timeout=socket_timeout,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
