"""A consumer in its own process, for tests that kill a consumer at an exact point.

    python -m tests.shared.bus.consumer_proc REDIS_URL STREAM GROUP CONSUMER MODE

MODE ``die-after-effect``: apply the effect (INCR a counter, atomically with the dedupe
mark) and then SIGKILL itself before the ack. ``die-before-effect``: SIGKILL itself as
soon as the first message reaches the handler.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import redis.asyncio as aioredis

from shared.bus.consumer import ConsumerConfig, Delivery, StreamConsumer
from shared.bus.dedupe import RedisDeduplicator


async def main(redis_url: str, stream: str, group: str, consumer: str, mode: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    dedupe = RedisDeduplicator(redis, group)

    async def handler(delivery: Delivery) -> None:
        if mode == "die-before-effect":
            os.kill(os.getpid(), signal.SIGKILL)
        pipe = redis.pipeline(transaction=True)
        pipe.incr(f"effect:{delivery.message.event_id}")
        dedupe.mark_in(pipe, delivery.message.event_id)
        await pipe.execute()
        if mode == "die-after-effect":
            os.kill(os.getpid(), signal.SIGKILL)

    config = ConsumerConfig(stream=stream, group=group, consumer=consumer, claim_idle_ms=600_000, batch=10)
    await StreamConsumer(redis_url, config, handler, dedupe).run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
