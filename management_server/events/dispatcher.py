"""The management server's consumer of ``freqfleet:events`` (group ``management``).

Each event type has a handler. Their effects are idempotent by design (upserts keyed by
the event's subject, states set rather than toggled, older reports dropped), and the Redis
deduplicator skips redeliveries; a handler whose effect could not be made idempotent would
record the event in the inbox (``claim_event``) in its own transaction (the audit rows of MCP calls and of
commands' outcomes do). Types without a handler are acked and counted.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from management_server.analytics.trades import TradeEffects
from management_server.audit.events import record_command_done, record_command_outcome, record_mcp_call
from management_server.bots import events as bot_events
from management_server.bus.service import acknowledge
from management_server.events.receipts import receipt_sender
from management_server.freqai import events as model_events
from management_server.gateways.service import record_heartbeat
from management_server.gateways.signatures import EventSignatures
from shared.bus.consumer import ConsumerConfig, Delivery, StreamConsumer
from shared.bus.dedupe import RedisDeduplicator
from shared.bus.messages import CommandAccepted, CommandRejected, Envelope, GatewayHeartbeat, McpCall
from shared.bus.streams import EVENTS_STREAM, MANAGEMENT_GROUP
from shared.logging import get_logger
from shared.metrics import MODEL_DEPLOYS

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
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], trade_effects: TradeEffects | None = None
    ) -> None:
        self.sessionmaker = sessionmaker
        self.trade_effects = trade_effects  # risk guard and analytics cache (management_server/analytics)
        self.handlers: dict[str, EventHandler] = {
            "GATEWAY_HEARTBEAT": self.on_heartbeat,
            "MCP_CALL": self.on_mcp_call,
            "COMMAND_ACCEPTED": self.on_command_accepted,
        }
        for event_type in BOT_EVENTS:
            self.handlers[event_type] = self.on_bot_event
        for event_type in ("MODEL_LOADED", "MODEL_REJECTED"):
            self.handlers[event_type] = self.on_model_event
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
        effects = self.trade_effects
        async with self.sessionmaker.begin() as session:
            for reached in await bot_events.apply(session, message):
                await record_command_done(session, reached.bot_id, reached.state, message, reached.reason)
            if isinstance(message, CommandRejected):
                await record_command_outcome(session, message)
                await acknowledge(session, message)  # answered: never published again
            # a refused UPDATE_MODEL / ROLLBACK_MODEL (COMMAND_REJECTED)
            model_outcome = await model_events.apply(session, message)
            followup = await effects.in_transaction(session, message) if effects is not None else None
        if model_outcome is not None:
            MODEL_DEPLOYS.labels(model_outcome).inc()
        if effects is not None:
            await effects.after_commit(followup)

    async def on_command_accepted(self, message: Envelope) -> None:
        assert isinstance(message, CommandAccepted)
        async with self.sessionmaker.begin() as session:
            await bot_events.apply(session, message)  # a live change the gateway took: no longer pending
            await record_command_outcome(session, message)
            await acknowledge(session, message)  # answered: never published again

    async def on_model_event(self, message: Envelope) -> None:
        async with self.sessionmaker.begin() as session:
            outcome = await model_events.apply(session, message)
        if outcome is not None:
            MODEL_DEPLOYS.labels(outcome).inc()

    async def on_mcp_call(self, message: Envelope) -> None:
        assert isinstance(message, McpCall)
        # The audit log is append-only: the inbox claim in the same transaction makes it once.
        async with self.sessionmaker.begin() as session:
            await record_mcp_call(session, message)


CONSUMED_EVENTS_KEPT = 600.0  # seconds an applied event stays readable with XRANGE


def create_event_consumer(
    redis_url: str,
    redis: aioredis.Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    instance: str,
    *,
    trade_effects: TradeEffects | None = None,
    signatures: EventSignatures | None = None,
) -> StreamConsumer:
    """One consumer per management process; the name is stable so a restart finds its pending entries.

    Events every group has consumed are trimmed after ``CONSUMED_EVENTS_KEPT`` seconds, so the stream holds
    minutes of events in normal operation and its age limit (``FREQFLEET_EVENTS_MAX_AGE``) only matters while
    the management server is away."""
    config = ConsumerConfig(
        stream=EVENTS_STREAM,
        group=MANAGEMENT_GROUP,
        consumer=f"management@{socket.gethostname()}:{instance}",
        trim_consumed_after_s=CONSUMED_EVENTS_KEPT,
    )
    dispatcher = EventDispatcher(sessionmaker, trade_effects)
    return StreamConsumer(
        redis_url,
        config,
        dispatcher,
        RedisDeduplicator(redis, MANAGEMENT_GROUP),
        admit=signatures or EventSignatures(sessionmaker),  # only what enrolled gateways signed
        after_batch=receipt_sender(redis),  # each gateway learns which of its events were applied
    )
