"""gateway_load: a gateway's host load as its last heartbeat reported it (CPU, memory, bots by state)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 09:05:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("gateways", sa.Column("load", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("gateways", "load")
