#!/bin/sh
# First start: a cluster in $PGDATA with the service's role and database (password from
# POSTGRES_PASSWORD, scram-sha-256 over TCP). Then PostgreSQL in the foreground.
set -eu
BIN=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
USER_NAME=${POSTGRES_USER:-wbc}
DB_NAME=${POSTGRES_DB:-wbc}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  "$BIN/initdb" -D "$PGDATA" -U "$USER_NAME" --pwfile="$pwfile" --auth-host=scram-sha-256 \
    --auth-local=trust -E UTF8 >/dev/null
  rm -f "$pwfile"
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  "$BIN/pg_ctl" -D "$PGDATA" -w -o "-c listen_addresses=''" start >/dev/null
  "$BIN/createdb" -U "$USER_NAME" "$DB_NAME"
  "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec "$BIN/postgres" -D "$PGDATA"
