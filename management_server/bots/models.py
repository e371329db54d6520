"""Bots (desired state, set by people; actual state, reported by gateways) and their trades."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from management_server.db import Base, TimestampMixin


class DesiredState(StrEnum):
    running = "running"
    paused = "paused"
    stopped = "stopped"
    halted = "halted"


class ActualState(StrEnum):
    stopped = "stopped"
    starting = "starting"
    running = "running"
    paused = "paused"
    stopping = "stopping"
    failed = "failed"
    halted = "halted"
    # its gateway was revoked, or it is pinned to a gateway whose lease on it ended: it runs nowhere we trust until
    # started again (or its gateway comes back)
    orphaned = "orphaned"
    unknown = "unknown"  # its gateway has not reported for a while: nobody can say (bots/reconcile.py)
    lost = "lost"  # its gateway has been silent for minutes: it runs nowhere we know of


class Bot(TimestampMixin, Base):
    __tablename__ = "bots"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    strategy_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("strategies.id"), nullable=False)
    exchange: Mapped[str] = mapped_column(String(50), nullable=False)
    pairs: Mapped[list[str]] = mapped_column(JSONB, nullable=False)
    timeframe: Mapped[str] = mapped_column(String(8), nullable=False)
    stake_currency: Mapped[str] = mapped_column(String(20), nullable=False)
    stake_amount: Mapped[Decimal | None] = mapped_column(Numeric(24, 8), nullable=True)  # None: "unlimited"
    max_open_trades: Mapped[int] = mapped_column(Integer, nullable=False)
    dry_run: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    dry_run_wallet: Mapped[Decimal | None] = mapped_column(Numeric(24, 8), nullable=True)
    stoploss: Mapped[float | None] = mapped_column(Float, nullable=True)
    credentials_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("exchange_credentials.id"), nullable=True)
    freqai: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    model_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    # FreqAI models (management_server/freqai): the state of the latest deployment (pending, loaded,
    # rejected) and the model the bot last reported predicting with.
    model_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    model_loaded_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)

    desired_state: Mapped[str] = mapped_column(String(16), nullable=False, default=DesiredState.stopped.value)
    actual_state: Mapped[str] = mapped_column(String(16), nullable=False, default=ActualState.stopped.value)
    generation: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    gateway_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_status: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    last_status_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # the newest lifecycle report applied (BOT_STARTED/STOPPED/FAILED): an older one of that generation, sent again
    # after Redis lost it or applied late by another replica, leaves the state alone (bots/events.py)
    reported_generation: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reported_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    trade_db: Mapped[str] = mapped_column(  # where its trades live: "sqlite" (its folder) or "postgres" (botdb)
        String(16), nullable=False, default="sqlite", server_default="sqlite"
    )
    # stopped by the drain of this gateway, to be started on another once stopped (bots/drain.py)
    moving_from: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # placement: {"gateway_id"}: it starts on that gateway only, and failover and drains leave it there
    pinned_gateway_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    moving_paused: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default="false")
    launcher: Mapped[str | None] = mapped_column(String(8), nullable=True)  # exec or fork, from BOT_STARTED
    # reconcile (bots/reconcile.py): commands it sent because the bot's gateway disagreed, and the last one's time
    commanded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # last command
    # A live change (UPDATE_CONFIG) the gateway has not answered yet: its command id and the values the bot ran
    # with before, put back if the gateway refuses it (bots/events.py).
    pending_change: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    reconcile_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    reconciled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # risk guard (management_server/analytics/risk.py): the bot's own drawdown limit (None: the setting's
    # default), why and when the guard last paused it, and the moment its high-water mark starts from.
    max_drawdown_ratio: Mapped[float | None] = mapped_column(Float, nullable=True)
    risk_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    risk_paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    risk_baseline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    @property
    def placement(self) -> dict[str, str] | None:
        """Where it is pinned (the API's ``placement``), None when it goes wherever there is room."""
        return None if self.pinned_gateway_id is None else {"gateway_id": self.pinned_gateway_id}

    __table_args__ = (
        UniqueConstraint("owner_id", "name", name="uq_bots_owner_id_name"),
        Index("ix_bots_owner_id", "owner_id"),
    )


class Trade(Base):
    """A trade as the gateway reported it; (bot, trade id) is unique, so a repeated event changes nothing."""

    __tablename__ = "trades"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    bot_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("bots.id", ondelete="CASCADE"), nullable=False)
    trade_id: Mapped[int] = mapped_column(Integer, nullable=False)
    pair: Mapped[str] = mapped_column(String(50), nullable=False)
    is_short: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    is_open: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    open_date: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    close_date: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    open_rate: Mapped[float] = mapped_column(Float, nullable=False)
    close_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    amount: Mapped[float] = mapped_column(Float, nullable=False)
    stake_amount: Mapped[float] = mapped_column(Float, nullable=False)
    profit_abs: Mapped[float | None] = mapped_column(Float, nullable=True)
    profit_ratio: Mapped[float | None] = mapped_column(Float, nullable=True)
    enter_tag: Mapped[str | None] = mapped_column(String(100), nullable=True)
    exit_reason: Mapped[str | None] = mapped_column(String(100), nullable=True)

    __table_args__ = (
        UniqueConstraint("bot_id", "trade_id", name="uq_trades_bot_id_trade_id"),
        Index("ix_trades_bot_id_open_date", "bot_id", "open_date"),
    )
