"""bot_launcher: how a bot's process was started on its gateway (exec'd, or forked by the gateway's launcher)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 11:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("bots", sa.Column("launcher", sa.String(length=8), nullable=True))


def downgrade() -> None:
    op.drop_column("bots", "launcher")
