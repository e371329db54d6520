"""Writing commands through the outbox, and recording applied events in the inbox."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from redis.asyncio.client import Pipeline
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from management_server.bus.models import OutboxMessage, ProcessedEvent
from management_server.db import utcnow
from shared.bus.messages import CommandAccepted, CommandRejected, Envelope, encode
from shared.bus.publisher import with_request_correlation
from shared.bus.streams import commands_stream

OUTBOX_CHANNEL = "freqfleet_outbox"  # NOTIFYed by the outbox's trigger (migration 0010)


async def enqueue(session: AsyncSession, stream: str, message: Envelope) -> OutboxMessage:
    """Add ``message`` to the outbox in the caller's transaction (written with the transaction's next flush).

    It is published only if that transaction commits, and then surely (by the relay, even after a crash). The
    outbox's trigger NOTIFYs ``OUTBOX_CHANNEL``: delivered at commit, it wakes every process's relay at once.
    """
    row = OutboxMessage(**outbox_row(stream, message))
    session.add(row)
    return row


def outbox_row(stream: str, message: Envelope) -> dict[str, Any]:
    """The outbox row's values for ``message`` (the request's correlation id put in), for ``enqueue`` or a
    statement that writes the row with others (``bots.lifecycle.act``)."""
    message = with_request_correlation(message)
    return {
        "event_id": message.event_id,
        "stream": stream,
        "message_type": message.type,
        "envelope": encode(message),
        "created_at": utcnow(),  # every value given: a statement's CTE gets no column defaults
        "attempts": 0,
    }


async def acknowledge(session: AsyncSession, answer: CommandAccepted | CommandRejected) -> bool:
    """A gateway answered a command sent to it (accepted or rejected): the command is not published again. False
    when it was answered before, or is no command of the outbox to that gateway (one gateway can't answer for
    another: the answer's source is signed)."""
    gateway_id = answer.source.removeprefix("gateway:")
    result = await session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.event_id == answer.data.command_id,
            OutboxMessage.stream == commands_stream(gateway_id),
            OutboxMessage.acknowledged_at.is_(None),
        )
        .values(acknowledged_at=func.now(), republish_at=None)
    )
    return bool(getattr(result, "rowcount", 0))


async def claim_event(session: AsyncSession, consumer_group: str, message: Envelope) -> bool:
    """Record that ``message`` is being applied, in the caller's transaction.

    False when it was applied before: the caller skips the effect. Because the record
    commits (or rolls back) with the effect, an event is applied exactly once even when
    a consumer dies between its commit and its XACK.
    """
    result = await session.execute(
        insert(ProcessedEvent)
        .values(consumer_group=consumer_group, event_id=message.event_id, message_type=message.type)
        .on_conflict_do_nothing()
        .returning(ProcessedEvent.event_id)
    )
    return result.scalar_one_or_none() is not None


class InboxDeduplicator:
    """The consumer's duplicate check backed by the inbox table (see ``claim_event``)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], consumer_group: str) -> None:
        self.sessionmaker = sessionmaker
        self.consumer_group = consumer_group

    async def processed_among(self, messages: Sequence[Envelope]) -> set[uuid.UUID]:
        async with self.sessionmaker() as session:
            result = await session.execute(
                select(ProcessedEvent.event_id).where(
                    ProcessedEvent.consumer_group == self.consumer_group,
                    ProcessedEvent.event_id.in_([m.event_id for m in messages]),
                )
            )
            return set(result.scalars())

    async def mark_processed(self, message: Envelope, pipe: Pipeline) -> None:
        """Record handlers that had no database effect of their own (idempotent)."""
        async with self.sessionmaker.begin() as session:
            await claim_event(session, self.consumer_group, message)
