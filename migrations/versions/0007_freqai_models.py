"""freqai models: model versions (the registry), bots' model history, bots' model state

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 18:50:01.203728+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("strategy_id", sa.Uuid(), nullable=True),
        sa.Column("strategy_class", sa.String(length=100), nullable=True),
        sa.Column("strategy_source", sa.Text(), nullable=True),
        sa.Column("strategy_sha256", sa.String(length=64), nullable=True),
        sa.Column("exchange", sa.String(length=50), nullable=True),
        sa.Column("freqai_model", sa.String(length=64), nullable=False),
        sa.Column("pairs", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("timeframe", sa.String(length=8), nullable=False),
        sa.Column("trained_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trained_to", sa.DateTime(timezone=True), nullable=False),
        sa.Column("holdout_hours", sa.Float(), nullable=True),
        sa.Column("freqai", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("progress", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("log_tail", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("compressed_size", sa.BigInteger(), nullable=True),
        sa.Column("store_key_id", sa.String(length=32), nullable=True),
        sa.Column("identifier", sa.String(length=200), nullable=True),
        sa.Column("features", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("labels", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("metrics", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("library_versions", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_model_versions_owner_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["strategy_id"],
            ["strategies.id"],
            name=op.f("fk_model_versions_strategy_id_strategies"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint("owner_id", "name", "version", name="uq_model_versions_owner_id_name_version"),
    )
    op.create_index("ix_model_versions_owner_id_created_at", "model_versions", ["owner_id", "created_at"], unique=False)
    op.create_table(
        "bot_model_deployments",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("bot_id", sa.Uuid(), nullable=False),
        sa.Column("model_id", sa.Uuid(), nullable=False),
        sa.Column("previous_model_id", sa.Uuid(), nullable=True),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("command_id", sa.Uuid(), nullable=True),
        sa.Column("command_type", sa.String(length=32), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=True),
        sa.Column("transfer", sa.String(length=16), nullable=True),
        sa.Column("requested_by", sa.Uuid(), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("load_seconds", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["bot_id"], ["bots.id"], name=op.f("fk_bot_model_deployments_bot_id_bots"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["model_versions.id"],
            name=op.f("fk_bot_model_deployments_model_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bot_model_deployments")),
    )
    op.create_index("ix_bot_model_deployments_bot_id_id", "bot_model_deployments", ["bot_id", "id"], unique=False)
    op.create_index("ix_bot_model_deployments_command_id", "bot_model_deployments", ["command_id"], unique=False)
    op.add_column("bots", sa.Column("model_state", sa.String(length=16), nullable=True))
    op.add_column("bots", sa.Column("model_loaded_id", sa.Uuid(), nullable=True))


def downgrade() -> None:
    op.drop_column("bots", "model_loaded_id")
    op.drop_column("bots", "model_state")
    op.drop_index("ix_bot_model_deployments_command_id", table_name="bot_model_deployments")
    op.drop_index("ix_bot_model_deployments_bot_id_id", table_name="bot_model_deployments")
    op.drop_table("bot_model_deployments")
    op.drop_index("ix_model_versions_owner_id_created_at", table_name="model_versions")
    op.drop_table("model_versions")
