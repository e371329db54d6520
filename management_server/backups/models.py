"""Scheduled jobs' runs, claimed once per period over every worker (``backups/tasks.py::claim_period``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String, func
from sqlalchemy.orm import Mapped, mapped_column

from management_server.db import Base


class ScheduledRun(Base):
    __tablename__ = "scheduled_runs"

    job: Mapped[str] = mapped_column(String(100), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)
