"""pinned: a bot pinned to one gateway (``placement``) runs there only, and is not moved by failover or a drain

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 02:40:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("bots", sa.Column("pinned_gateway_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("bots", "pinned_gateway_id")
