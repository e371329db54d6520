"""bots.reported_generation/reported_at: the newest lifecycle report applied, so an older one (sent again after
Redis lost it, or applied late by another management replica) does not take the bot back

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 06:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("bots", sa.Column("reported_generation", sa.Integer(), nullable=True))
    op.add_column("bots", sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("bots", "reported_at")
    op.drop_column("bots", "reported_generation")
