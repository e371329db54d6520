#!/bin/sh
# Run once by the postgres image when it initialises an empty data folder (/docker-entrypoint-initdb.d/): a role
# the standby streams the WAL with, and the pg_hba line that lets it. For a primary initialised before, run the
# same two statements once by hand (docker compose exec postgres psql -U freqfleet -d freqfleet), then
# `SELECT pg_reload_conf();`.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set=password="$POSTGRES_REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'password';
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
