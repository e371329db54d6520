from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
import redis.asyncio as aioredis

from shared.bus.messages import StopBot, StopBotData
from shared.bus.publisher import Publisher


@pytest_asyncio.fixture(loop_scope="session")
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def publisher(redis: aioredis.Redis) -> Publisher:
    return Publisher(redis)


def stop_bot(generation: int = 1, bot_id: uuid.UUID | None = None, correlation_id: str | None = None) -> StopBot:
    return StopBot(
        source="management",
        correlation_id=correlation_id,
        data=StopBotData(bot_id=bot_id or uuid.uuid4(), generation=generation),
    )
