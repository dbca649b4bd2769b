#!/bin/bash
# Plain-worker benchmark: N (20000) `echo` tasks published with `swarmd publish --file`, then
# one `swarmd worker` with no flags (its defaults: a process per core, `auto` slots, mirror
# on) burns them down; prints first -> last completion as `swarmd bench` does. Compare with
# `swarmd bench` run just before/after: issue 13 asks for >= 0.9 of it.
# BIN=path/to/swarmd, N=count.
set -e
BIN=${BIN:-target/release/swarmd}
N=${N:-20000}
TAG=$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
export SWARM_DATABASE_URL=${SWARM_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/test?sslmode=disable}
export SWARM_NATS_URL=${SWARM_NATS_URL:-nats://127.0.0.1:4222} SWARM_REDIS_URL=${SWARM_REDIS_URL:-redis://127.0.0.1:6379}
export SWARM_REDIS_PREFIX="bw:$TAG:" SWARM_DATABASE_SCHEMA="bw_$TAG" SWARM_STREAM="BW_$TAG" SWARM_SUBJECT_PREFIX="bw.$TAG" SWARM_METRICS_ADDR= SWARM_LOG=warn
unset SWARM_WORKER_PROCESSES SWARM_RUNTIME_THREADS SWARM_CONCURRENCY
python3 -c "
import json, sys
for i in range($N):
    print(json.dumps({'agent_type': 'echo', 'data': {'i': i}, 'priority': i % 10}))
" > /tmp/bw_$TAG.jsonl
$BIN migrate >/dev/null
$BIN publish --file /tmp/bw_$TAG.jsonl >/dev/null 2>&1
$BIN worker --no-migrate >/tmp/bw_w.log 2>&1 & W=$!
while true; do
  c=$(psql "$SWARM_DATABASE_URL" -Atc "select count(*) from bw_$TAG.tasks where status='completed'")
  [ "$c" -ge "$N" ] && break
  sleep 0.2
done
kill $W; wait $W 2>/dev/null || true
psql "$SWARM_DATABASE_URL" -Atc "select round($N / extract(epoch from max(completed_at)-min(completed_at))) || ' tasks/s first->last completion' from bw_$TAG.tasks"
psql "$SWARM_DATABASE_URL" -qc "set client_min_messages=warning; drop schema bw_$TAG cascade"
redis-cli --scan --pattern "bw:$TAG:*" | xargs -r redis-cli del >/dev/null
exec 3<>/dev/tcp/127.0.0.1/4222; printf 'CONNECT {"verbose":false}\r\nSUB _INBOX.bw 1\r\nPUB $JS.API.STREAM.DELETE.BW_%s _INBOX.bw 0\r\n\r\nPING\r\n' "$TAG" >&3; sleep 0.5; exec 3>&-
rm -f /tmp/bw_$TAG.jsonl
