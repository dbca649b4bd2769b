#!/bin/sh
# A streaming replica of the `postgres` service: on first start, copy the primary with
# pg_basebackup (which also writes standby.signal and primary_conninfo, and creates a
# replication slot so the primary keeps the WAL the replica still needs); then run as a hot
# standby. Reads from the fleet (SWARM_REPLICA_URLS) land here.
set -eu
: "${PRIMARY_HOST:=postgres}"
: "${REPLICA_SLOT:=replica_1}"
mkdir -p "$PGDATA"
chown postgres:postgres "$PGDATA"
chmod 0700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until gosu postgres pg_isready -h "$PRIMARY_HOST" -U replicator -q; do sleep 1; done
  export PGPASSWORD="$REPLICATION_PASSWORD"
  until gosu postgres pg_basebackup -h "$PRIMARY_HOST" -U replicator -D "$PGDATA" \
      --write-recovery-conf --wal-method=stream --create-slot --slot="$REPLICA_SLOT"; do
    echo "waiting for the primary to accept a base backup"
    rm -rf "${PGDATA:?}"/*
    sleep 2
  done
fi
exec gosu postgres postgres -c hot_standby=on
