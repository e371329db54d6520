"""The management server's consumer of ``freqfleet:events`` (group ``management``).

Each event type has a handler; handlers that change the database record the event in the
inbox (``claim_event``) in the same transaction, so an event is applied once however often
it is delivered. Types without a handler yet are acked and counted.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from management_server.gateways.service import record_heartbeat
from shared.bus import ConsumerConfig, Delivery, RedisDeduplicator, StreamConsumer
from shared.bus.messages import Envelope, GatewayHeartbeat
from shared.bus.streams import EVENTS_STREAM, MANAGEMENT_GROUP
from shared.logging import get_logger

log = get_logger(__name__)

EventHandler = Callable[[Envelope], Awaitable[None]]


class EventDispatcher:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker
        self.handlers: dict[str, EventHandler] = {"GATEWAY_HEARTBEAT": self.on_heartbeat}
        self.unhandled: dict[str, int] = {}

    async def __call__(self, delivery: Delivery) -> None:
        handler = self.handlers.get(delivery.message.type)
        if handler is None:
            self.unhandled[delivery.message.type] = self.unhandled.get(delivery.message.type, 0) + 1
            log.debug("no handler for this event type yet", message_type=delivery.message.type)
            return
        await handler(delivery.message)

    async def on_heartbeat(self, message: Envelope) -> None:
        assert isinstance(message, GatewayHeartbeat)
        # An upsert guarded by the heartbeat's time: applying it twice changes nothing.
        async with self.sessionmaker.begin() as session:
            await record_heartbeat(session, message)


def create_event_consumer(
    redis_url: str, redis: aioredis.Redis, sessionmaker: async_sessionmaker[AsyncSession], instance: str
) -> StreamConsumer:
    """One consumer per management process; the name is stable so a restart finds its pending entries."""
    config = ConsumerConfig(
        stream=EVENTS_STREAM, group=MANAGEMENT_GROUP, consumer=f"management@{socket.gethostname()}:{instance}"
    )
    return StreamConsumer(redis_url, config, EventDispatcher(sessionmaker), RedisDeduplicator(redis, MANAGEMENT_GROUP))
