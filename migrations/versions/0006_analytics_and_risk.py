"""analytics and risk: drawdown limits and risk state on bots, users' risk state, gateways' API URL

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 09:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('bots', sa.Column('max_drawdown_ratio', sa.Float(), nullable=True))
    op.add_column('bots', sa.Column('risk_reason', sa.Text(), nullable=True))
    op.add_column('bots', sa.Column('risk_paused_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('bots', sa.Column('risk_baseline_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('gateways', sa.Column('api_url', sa.String(length=255), nullable=True))
    op.create_table('user_risk_states',
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('baseline_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('breached_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_risk_states_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_user_risk_states'))
    )


def downgrade() -> None:
    op.drop_table('user_risk_states')
    op.drop_column('gateways', 'api_url')
    op.drop_column('bots', 'risk_baseline_at')
    op.drop_column('bots', 'risk_paused_at')
    op.drop_column('bots', 'risk_reason')
    op.drop_column('bots', 'max_drawdown_ratio')
