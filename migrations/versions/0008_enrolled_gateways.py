"""enrolled gateways: public keys, enrollment and revocation; heartbeat fields nullable

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 23:50:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HEARTBEAT = ("host", "version", "started_at", "last_seen_at")


def upgrade() -> None:
    op.add_column("gateways", sa.Column("signing_key", sa.String(length=64), nullable=True))
    op.add_column("gateways", sa.Column("sealing_key", sa.String(length=64), nullable=True))
    op.add_column("gateways", sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("gateways", sa.Column("enrolled_by", sa.Uuid(), nullable=True))
    op.add_column("gateways", sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
    for column in HEARTBEAT:
        op.alter_column("gateways", column, nullable=True)
    # A bot's exchange credentials now travel sealed to one gateway: published commands that carried them in
    # the clear are not kept (the outbox keeps published rows a week for inspection only).
    op.execute(
        "DELETE FROM outbox_messages WHERE published_at IS NOT NULL AND envelope LIKE '%\"credentials\":{%'"
    )


def downgrade() -> None:
    op.execute("DELETE FROM gateways WHERE last_seen_at IS NULL")
    for column in HEARTBEAT:
        op.alter_column("gateways", column, nullable=False)
    for column in ("revoked_at", "enrolled_by", "enrolled_at", "sealing_key", "signing_key"):
        op.drop_column("gateways", column)
