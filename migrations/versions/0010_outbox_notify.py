"""outbox_notify: a new outbox row wakes the relays (NOTIFY at commit) from a trigger, not a statement of its own

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 08:10:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # One NOTIFY per inserting statement, delivered when its transaction commits (none if it rolls back); the
    # relays LISTEN on freqfleet_outbox (management_server/bus/relay.py). Saves each command a round trip.
    op.execute(
        """
        CREATE FUNCTION freqfleet_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('freqfleet_outbox', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox_messages FOR EACH STATEMENT EXECUTE FUNCTION freqfleet_outbox_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER outbox_notify ON outbox_messages")
    op.execute("DROP FUNCTION freqfleet_outbox_notify()")
