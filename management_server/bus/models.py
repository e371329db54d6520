"""The transactional outbox and the inbox of applied events."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Identity, Index, Integer, String, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from management_server.db import Base, utcnow


class OutboxMessage(Base):
    """A message to publish, written in the same transaction as the state change it announces."""

    __tablename__ = "outbox_messages"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True, nullable=False)
    stream: Mapped[str] = mapped_column(String(200), nullable=False)
    message_type: Mapped[str] = mapped_column(String(64), nullable=False)
    # The envelope exactly as it will be published: a re-publish sends the same bytes.
    envelope: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # A command is done when its gateway answers it (COMMAND_ACCEPTED or COMMAND_REJECTED); until then the relay
    # publishes it again at ``republish_at`` (bus/relay.py), the same bytes and id. Other messages are done once
    # published. None: nothing to wait for (answered, given up, or not a command).
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    republish_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        Index("ix_outbox_messages_unpublished", "id", postgresql_where=text("published_at IS NULL")),
        Index("ix_outbox_messages_published_at", "published_at"),
        Index("ix_outbox_messages_awaiting_answer", "republish_at", postgresql_where=text("republish_at IS NOT NULL")),
    )


class ProcessedEvent(Base):
    """Events whose effect was applied, recorded in the effect's own transaction."""

    __tablename__ = "processed_events"

    consumer_group: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    message_type: Mapped[str] = mapped_column(String(64), nullable=False)
    processed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
