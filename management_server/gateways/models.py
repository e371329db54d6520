"""Gateways: enrolled by an admin (their public keys), then described by their signed heartbeats."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Integer, String, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from management_server.db import Base


class Gateway(Base):
    __tablename__ = "gateways"

    gateway_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # From enrollment: the gateway's public keys (Base64, raw 32 bytes). Without them the row is a gateway
    # heard of before enrollment existed (an upgrade): its reports are ignored until an admin enrolls it.
    signing_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sealing_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    enrolled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    enrolled_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Being drained (bots/drain.py): it takes no new bot, and its bots are moved off one at a time.
    drain_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # From its signed heartbeats (None before the first).
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    bots_running: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    capacity: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Where the management server reaches the gateway's REST API (its signed heartbeat says; None before).
    api_url: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # The bots it last said it has (its heartbeat's inventory: id, generation, desired, actual) and when.
    inventory: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB, nullable=True)
    # The host's load as the last heartbeat said it (LOAD_FIELDS of gateways/service.py): what the dashboard shows.
    load: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    inventory_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    @property
    def enrolled(self) -> bool:
        return self.signing_key is not None and self.revoked_at is None

    @property
    def status(self) -> str:
        """enrolled, revoked, or unenrolled (heard of before enrollment existed: its reports are ignored)."""
        return "revoked" if self.revoked_at else "enrolled" if self.signing_key else "unenrolled"
