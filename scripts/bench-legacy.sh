#!/bin/bash
# Legacy intake benchmark: N (20000) seed-style members ZADDed to agent_tasks (RESP through
# redis-cli --pipe), then one plain `swarmd worker` (its default: a process per core) takes
# them in; prints the
# burn-down (first to last completion) as `swarmd bench` does. Compare with `swarmd bench`
# run just before/after: issue 13 asks for >= 0.9 of it. BIN=path/to/swarmd, N=count.
set -e
source "$(dirname "$0")/bench-common.sh" lb
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
wait_completed
end=$(date +%s.%N)
kill $W; wait $W 2>/dev/null || true
echo "wall from worker start: $(python3 -c "print(round($N/($end-$start)))") tasks/s"
report_and_clean_up
rm -f /tmp/lb_$TAG.resp
