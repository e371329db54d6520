"""scheduled_runs: a scheduled job's run per period, claimed once over every worker (Celery beat on more than one)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 04:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "scheduled_runs",
        sa.Column("job", sa.String(length=100), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("job", "period_start", name="pk_scheduled_runs"),
    )


def downgrade() -> None:
    op.drop_table("scheduled_runs")
