#!/bin/bash
# Legacy intake benchmark: N (20000) seed-style members ZADDed to agent_tasks (RESP through
# redis-cli --pipe), then one plain `swarmd worker` (its default: a process per core) takes
# them in; prints the
# burn-down (first to last completion) as `swarmd bench` does. Compare with `swarmd bench`
# run just before/after: issue 13 asks for >= 0.9 of it. BIN=path/to/swarmd, N=count.
set -e
BIN=${BIN:-target/release/swarmd}
N=${N:-20000}
TAG=$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
export SWARM_DATABASE_URL=${SWARM_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/test?sslmode=disable}
export SWARM_NATS_URL=${SWARM_NATS_URL:-nats://127.0.0.1:4222} SWARM_REDIS_URL=${SWARM_REDIS_URL:-redis://127.0.0.1:6379}
export SWARM_REDIS_PREFIX="lb:$TAG:" SWARM_DATABASE_SCHEMA="lb_$TAG" SWARM_STREAM="LB_$TAG" SWARM_SUBJECT_PREFIX="lb.$TAG" SWARM_METRICS_ADDR= SWARM_LOG=warn
python3 - "$N" "$SWARM_REDIS_PREFIX" > /tmp/lb_$TAG.resp <<'PY'
import json, sys, uuid, datetime
n, prefix = int(sys.argv[1]), sys.argv[2]
key = prefix + "agent_tasks"
out = sys.stdout
for i in range(n):
    member = json.dumps({"id": str(uuid.uuid4()), "data": {"agent_type": "echo", "data": {"i": i}}, "priority": i % 10, "created_at": datetime.datetime.utcnow().isoformat(), "attempts": 0, "max_attempts": 3})
    parts = ["ZADD", key, str(i % 10), member]
    out.write("*%d\r\n" % len(parts))
    for p in parts:
        b = p.encode()
        out.write("$%d\r\n%s\r\n" % (len(b), p))
PY
$BIN migrate >/dev/null
redis-cli --pipe < /tmp/lb_$TAG.resp >/dev/null
start=$(date +%s.%N)
$BIN worker --no-migrate >/tmp/lb_w.log 2>&1 & W=$!
while true; do
  c=$(psql "$SWARM_DATABASE_URL" -Atc "select count(*) from lb_$TAG.tasks where status='completed'")
  [ "$c" -ge "$N" ] && break
  sleep 0.2
done
end=$(date +%s.%N)
kill $W; wait $W 2>/dev/null || true
psql "$SWARM_DATABASE_URL" -Atc "select round($N / extract(epoch from max(completed_at)-min(completed_at))) || ' tasks/s first->last completion' from lb_$TAG.tasks"
echo "wall from worker start: $(python3 -c "print(round($N/($end-$start)))") tasks/s"
psql "$SWARM_DATABASE_URL" -qc "set client_min_messages=warning; drop schema lb_$TAG cascade"
redis-cli --scan --pattern "lb:$TAG:*" | xargs -r redis-cli del >/dev/null
exec 3<>/dev/tcp/127.0.0.1/4222; printf 'CONNECT {"verbose":false}\r\nSUB _INBOX.lb 1\r\nPUB $JS.API.STREAM.DELETE.LB_%s _INBOX.lb 0\r\n\r\nPING\r\n' "$TAG" >&3; sleep 0.5; exec 3>&-
rm -f /tmp/lb_$TAG.resp
