"""Strategies users upload: their source, review status and the result of the deeper check."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, String, Text, UniqueConstraint, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from management_server.db import Base, TimestampMixin


class StrategyStatus(StrEnum):
    pending_review = "pending_review"
    approved = "approved"
    rejected = "rejected"


class CheckStatus(StrEnum):
    not_run = "not_run"
    queued = "queued"
    running = "running"
    passed = "passed"
    failed = "failed"


class Strategy(TimestampMixin, Base):
    __tablename__ = "strategies"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    class_name: Mapped[str] = mapped_column(String(100), nullable=False)
    source: Mapped[str] = mapped_column(Text, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default=StrategyStatus.pending_review.value)
    review_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    reviewed_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    check_status: Mapped[str] = mapped_column(String(20), nullable=False, default=CheckStatus.not_run.value)
    check_result: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)

    __table_args__ = (
        UniqueConstraint("owner_id", "name", name="uq_strategies_owner_id_name"),
        Index("ix_strategies_owner_id", "owner_id"),
    )
