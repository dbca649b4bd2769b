# Sourced by the bench-*.sh scripts: a private stream, schema and key prefix named after
# $1 (two letters) and a random tag, the local services' URLs, and what waits for and cleans
# up one run. BIN=path/to/swarmd, N=count.
BIN=${BIN:-target/release/swarmd}
N=${N:-20000}
NAME=$1
TAG=$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
SCHEMA="${NAME}_$TAG"
export SWARM_DATABASE_URL=${SWARM_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/test?sslmode=disable}
export SWARM_NATS_URL=${SWARM_NATS_URL:-nats://127.0.0.1:4222} SWARM_REDIS_URL=${SWARM_REDIS_URL:-redis://127.0.0.1:6379}
export SWARM_REDIS_PREFIX="$NAME:$TAG:" SWARM_DATABASE_SCHEMA="$SCHEMA" SWARM_STREAM="${NAME^^}_$TAG" SWARM_SUBJECT_PREFIX="$NAME.$TAG" SWARM_METRICS_ADDR= SWARM_LOG=${SWARM_LOG:-warn}

# Waits until N tasks completed.
wait_completed() {
  while true; do
    c=$(psql "$SWARM_DATABASE_URL" -Atc "select count(*) from $SCHEMA.tasks where status='completed'")
    [ "$c" -ge "$N" ] && break
    sleep 0.2
  done
}

# Prints the burn-down (first to last completion), then removes the run's schema, keys and
# stream.
report_and_clean_up() {
  psql "$SWARM_DATABASE_URL" -Atc "select round($N / extract(epoch from max(completed_at)-min(completed_at))) || ' tasks/s first->last completion' from $SCHEMA.tasks"
  psql "$SWARM_DATABASE_URL" -qc "set client_min_messages=warning; drop schema $SCHEMA cascade"
  redis-cli --scan --pattern "$NAME:$TAG:*" | xargs -r redis-cli del >/dev/null
  exec 3<>/dev/tcp/127.0.0.1/4222
  printf 'CONNECT {"verbose":false}\r\nSUB _INBOX.%s 1\r\nPUB $JS.API.STREAM.DELETE.%s _INBOX.%s 0\r\n\r\nPING\r\n' "$NAME" "$SWARM_STREAM" "$NAME" >&3
  sleep 0.5
  exec 3>&-
}
