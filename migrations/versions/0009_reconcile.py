"""reconcile: each gateway's last inventory of bots; a bot's last command, reconcile attempts and unanswered live
change; the command an audited control action sent

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 02:40:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("gateways", sa.Column("inventory", postgresql.JSONB(), nullable=True))
    op.add_column("gateways", sa.Column("inventory_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("bots", sa.Column("reconcile_attempts", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("bots", sa.Column("reconciled_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("bots", sa.Column("commanded_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("bots", sa.Column("pending_change", postgresql.JSONB(), nullable=True))
    op.add_column("audit_log", sa.Column("command_id", sa.Uuid(), nullable=True))
    op.create_index(
        "ix_audit_log_command_id", "audit_log", ["command_id"], postgresql_where=sa.text("command_id IS NOT NULL")
    )


def downgrade() -> None:
    op.drop_index("ix_audit_log_command_id", table_name="audit_log")
    op.drop_column("audit_log", "command_id")
    op.drop_column("bots", "pending_change")
    op.drop_column("bots", "commanded_at")
    op.drop_column("bots", "reconciled_at")
    op.drop_column("bots", "reconcile_attempts")
    op.drop_column("gateways", "inventory_at")
    op.drop_column("gateways", "inventory")
