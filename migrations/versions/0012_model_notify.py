"""model_notify: a changed model version is NOTIFYed (its id and owner), for the dashboard's live feed

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 10:20:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Whoever writes the row (a request, the training worker's progress, a gateway's report applied): each row's
    # id and owner, delivered when the transaction commits; every management process LISTENs on
    # freqfleet_models (management_server/dashboard/models.py) and pushes the row to the pages that may see it.
    op.execute(
        """
        CREATE FUNCTION freqfleet_model_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            row_ record;
        BEGIN
            IF TG_OP = 'DELETE' THEN row_ := OLD; ELSE row_ := NEW; END IF;
            PERFORM pg_notify(
                'freqfleet_models',
                json_build_object('id', row_.id, 'owner', row_.owner_id, 'gone', TG_OP = 'DELETE')::text
            );
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER model_notify AFTER INSERT OR UPDATE OR DELETE ON model_versions "
        "FOR EACH ROW EXECUTE FUNCTION freqfleet_model_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER model_notify ON model_versions")
    op.execute("DROP FUNCTION freqfleet_model_notify()")
