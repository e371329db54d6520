"""The audit log: append-only (a trigger refuses UPDATE, DELETE and TRUNCATE)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, DateTime, Identity, Index, String, Text, Uuid, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from management_server.db import Base, utcnow


class Outcome(StrEnum):
    success = "success"
    failure = "failure"  # the action was attempted and did not succeed (a wrong password, a bot that failed)
    denied = "denied"  # authentication or authorisation refused it
    # A command to a gateway: ``requested`` when the API sent it, then a row of its own with what the gateway
    # did with it, ``accepted`` or ``refused`` (with the gateway's reason), and ``done`` once the bot reached what
    # was asked (running, paused, stopped; the trade closed), or ``failure`` with why if it failed on the way.
    requested = "requested"
    accepted = "accepted"
    refused = "refused"
    done = "done"


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    actor: Mapped[str] = mapped_column(String(320), nullable=False)  # email, "anonymous"
    via: Mapped[str] = mapped_column(String(16), nullable=False, default="rest")  # rest, mcp, system
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    target_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    target_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    correlation_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    command_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)  # the command a control action sent

    __table_args__ = (
        Index("ix_audit_log_command_id", "command_id", postgresql_where=text("command_id IS NOT NULL")),
        Index("ix_audit_log_occurred_at", "occurred_at"),
        Index("ix_audit_log_actor_id", "actor_id"),
        Index("ix_audit_log_action", "action"),
        Index("ix_audit_log_target", "target_type", "target_id"),
    )
