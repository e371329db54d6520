"""drain: a gateway being drained (it takes no new bots), and a bot stopped by a drain to be started elsewhere

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 01:10:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("gateways", sa.Column("drain_requested_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("bots", sa.Column("moving_from", sa.String(length=64), nullable=True))
    op.add_column("bots", sa.Column("moving_paused", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("bots", "moving_paused")
    op.drop_column("bots", "moving_from")
    op.drop_column("gateways", "drain_requested_at")
