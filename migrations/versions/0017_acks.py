"""acks: a command stays in the outbox until its gateway answers (acknowledged_at), published again while it does
not (republish_at)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 03:20:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox_messages", sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("outbox_messages", sa.Column("republish_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_outbox_messages_awaiting_answer",
        "outbox_messages",
        ["republish_at"],
        postgresql_where=sa.text("republish_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_messages_awaiting_answer", table_name="outbox_messages")
    op.drop_column("outbox_messages", "republish_at")
    op.drop_column("outbox_messages", "acknowledged_at")
