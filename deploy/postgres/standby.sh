#!/bin/sh
# The standby's entrypoint: on an empty data folder, copy the primary (pg_basebackup, streaming, with the
# recovery settings written: standby.signal and primary_conninfo), then start as the image does; PostgreSQL
# starts as a hot standby and follows the primary. Promote it when the primary is lost:
#   docker compose exec postgres-standby su-exec postgres pg_ctl promote
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    until su-exec postgres env PGPASSWORD="$POSTGRES_REPLICATION_PASSWORD" pg_basebackup \
        --host=postgres --username=replicator --pgdata="$PGDATA" \
        --write-recovery-conf --wal-method=stream --checkpoint=fast; do
        echo "standby: waiting for the primary"
        find "$PGDATA" -mindepth 1 -delete
        sleep 2
    done
fi
exec docker-entrypoint.sh postgres
