"""bot_databases: each bot's trade database in PostgreSQL (FREQFLEET_BOT_DB=postgres), and where a bot's trades live

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 00:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("bots", sa.Column("trade_db", sa.String(length=16), nullable=False, server_default="sqlite"))
    op.create_table(
        "bot_databases",
        sa.Column("bot_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("password_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["bot_id"], ["bots.id"], name=op.f("fk_bot_databases_bot_id_bots"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("bot_id", name=op.f("pk_bot_databases")),
        sa.UniqueConstraint("name", name=op.f("uq_bot_databases_name")),
    )


def downgrade() -> None:
    op.drop_table("bot_databases")
    op.drop_column("bots", "trade_db")
