"""Dead letters can be listed and, once their cause is fixed, replayed to be applied."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from shared.bus.consumer import ConsumerConfig, Delivery, StreamConsumer
from shared.bus.dead_letters import DeadLetterNotFound, dead_letter_streams, list_dead_letters, replay
from shared.bus.publisher import Publisher
from tests.helpers import until
from tests.shared.bus.conftest import stop_bot


async def test_a_dead_letter_replays_after_its_cause_is_fixed(
    redis_url: str, redis: aioredis.Redis, publisher: Publisher
) -> None:
    stream, group = f"freqfleet:test:{uuid.uuid4().hex[:6]}", "g"
    message = stop_bot()
    broken = True
    applied: list[uuid.UUID] = []

    async def handler(delivery: Delivery) -> None:
        if broken:
            raise RuntimeError("strategy file missing")
        applied.append(delivery.message.event_id)

    config = ConsumerConfig(stream, group, "c1", max_deliveries=2, claim_idle_ms=100, reclaim_interval_s=0.05)
    consumer = StreamConsumer(redis_url, config, handler)
    consumer.start()
    try:
        await publisher.publish(stream, message)
        await until(lambda: consumer.stats.dead_lettered == 1, timeout=10, what="the dead letter")

        assert f"{stream}:dead" in await dead_letter_streams(redis)
        [letter] = await list_dead_letters(redis, f"{stream}:dead")
        assert letter.source_stream == stream
        assert letter.event_id == str(message.event_id)
        assert letter.message_type == "STOP_BOT"
        assert letter.reason == "handler failed 2 times; last error: RuntimeError: strategy file missing"

        broken = False  # the operator fixed the cause
        await replay(redis, f"{stream}:dead", letter.entry_id)
        await until(lambda: applied == [message.event_id], timeout=10, what="the replayed message")
        assert await list_dead_letters(redis, f"{stream}:dead") == []
        with pytest.raises(DeadLetterNotFound):
            await replay(redis, f"{stream}:dead", letter.entry_id)
    finally:
        await consumer.stop()
