"""Model versions in the registry, and each bot's history of models deployed to it."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from management_server.db import Base, TimestampMixin


class ModelStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class ModelSource(StrEnum):
    training = "training"
    upload = "upload"


class ModelVersion(TimestampMixin, Base):
    """One version of a model: a training request and, once it succeeded, its bundle in the store.

    ``id`` is the ``model_id`` on the bus; ``version`` counts the versions of one ``name`` of one owner. The
    bundle itself (a zstd-compressed tar, see ``shared.freqai.bundle``) is a file of the model store, encrypted
    with the master key ``store_key_id``; ``sha256`` and ``size`` are those of the uncompressed tar (what is
    signed for transfer).
    """

    __tablename__ = "model_versions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False, default=ModelSource.training.value)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=ModelStatus.queued.value)
    # what was (or is to be) trained
    strategy_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("strategies.id", ondelete="SET NULL"), nullable=True
    )
    strategy_class: Mapped[str | None] = mapped_column(String(100), nullable=True)  # None: an upload that did not say
    strategy_source: Mapped[str | None] = mapped_column(Text, nullable=True)  # the source trained (None: uploads)
    strategy_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    exchange: Mapped[str | None] = mapped_column(String(50), nullable=True)  # None: an upload
    freqai_model: Mapped[str] = mapped_column(String(64), nullable=False)
    pairs: Mapped[list[str]] = mapped_column(JSONB, nullable=False)
    timeframe: Mapped[str] = mapped_column(String(8), nullable=False)
    trained_from: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    trained_to: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    holdout_hours: Mapped[float | None] = mapped_column(Float, nullable=True)
    # the request's FreqAI parameters; once trained, the whole freqai section it was trained with
    freqai: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    log_tail: Mapped[list[str] | None] = mapped_column(JSONB, nullable=True)
    # the bundle, once registered
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    compressed_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    store_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    identifier: Mapped[str | None] = mapped_column(String(200), nullable=True)
    features: Mapped[dict[str, list[str]] | None] = mapped_column(JSONB, nullable=True)
    labels: Mapped[list[str] | None] = mapped_column(JSONB, nullable=True)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    library_versions: Mapped[dict[str, str] | None] = mapped_column(JSONB, nullable=True)

    __table_args__ = (
        UniqueConstraint("owner_id", "name", "version", name="uq_model_versions_owner_id_name_version"),
        Index("ix_model_versions_owner_id_created_at", "owner_id", "created_at"),
    )


class DeploymentAction(StrEnum):
    deploy = "deploy"
    rollback = "rollback"
    start = "start"  # the bot started with its model (recorded when the gateway reports on it)


class DeploymentState(StrEnum):
    pending = "pending"  # sent (or to be carried by the bot's next start), not yet reported
    loaded = "loaded"  # the bot predicts with it (MODEL_LOADED)
    rejected = "rejected"  # the gateway or the bot refused it (MODEL_REJECTED, COMMAND_REJECTED)
    superseded = "superseded"  # another deployment came before this one was reported


class BotModelDeployment(Base):
    """One model deployed to (or rolled back on) one bot; the bot's history of models, newest last."""

    __tablename__ = "bot_model_deployments"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    bot_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("bots.id", ondelete="CASCADE"), nullable=False)
    model_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("model_versions.id", ondelete="CASCADE"), nullable=False
    )
    previous_model_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    action: Mapped[str] = mapped_column(String(16), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False, default=DeploymentState.pending.value)
    command_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    command_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    generation: Mapped[int | None] = mapped_column(Integer, nullable=True)
    transfer: Mapped[str | None] = mapped_column(String(16), nullable=True)  # inline, chunked, cached
    requested_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    reported_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    load_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        Index("ix_bot_model_deployments_bot_id_id", "bot_id", "id"),
        Index("ix_bot_model_deployments_command_id", "command_id"),
    )
