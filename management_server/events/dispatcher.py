"""The management server's consumer of ``freqfleet:events`` (group ``management``).

Each event type has a handler. Their effects are idempotent by design (upserts keyed by
the event's subject, states set rather than toggled, older reports dropped), and the Redis
deduplicator skips redeliveries; a handler whose effect could not be made idempotent would
record the event in the inbox (``claim_event``) in its own transaction. Types without a
handler (COMMAND_ACCEPTED, MODEL_LOADED ...) are acked and counted.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from management_server.bots import events as bot_events
from management_server.gateways.service import record_heartbeat
from shared.bus import ConsumerConfig, Delivery, RedisDeduplicator, StreamConsumer
from shared.bus.messages import Envelope, GatewayHeartbeat
from shared.bus.streams import EVENTS_STREAM, MANAGEMENT_GROUP
from shared.logging import get_logger

log = get_logger(__name__)

EventHandler = Callable[[Envelope], Awaitable[None]]
BOT_EVENTS = (
    "COMMAND_REJECTED",
    "BOT_STARTED",
    "BOT_STOPPED",
    "BOT_FAILED",
    "BOT_STATUS",
    "TRADE_OPENED",
    "TRADE_CLOSED",
    "EMERGENCY_STOP_COMPLETED",
)


class EventDispatcher:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker
        self.handlers: dict[str, EventHandler] = {"GATEWAY_HEARTBEAT": self.on_heartbeat}
        for event_type in BOT_EVENTS:
            self.handlers[event_type] = self.on_bot_event
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

    async def on_bot_event(self, message: Envelope) -> None:
        async with self.sessionmaker.begin() as session:
            await bot_events.apply(session, message)


def create_event_consumer(
    redis_url: str, redis: aioredis.Redis, sessionmaker: async_sessionmaker[AsyncSession], instance: str
) -> StreamConsumer:
    """One consumer per management process; the name is stable so a restart finds its pending entries."""
    config = ConsumerConfig(
        stream=EVENTS_STREAM, group=MANAGEMENT_GROUP, consumer=f"management@{socket.gethostname()}:{instance}"
    )
    return StreamConsumer(redis_url, config, EventDispatcher(sessionmaker), RedisDeduplicator(redis, MANAGEMENT_GROUP))
