#!/bin/bash
# Plain-worker benchmark: N (20000) `echo` tasks published with `swarmd publish --file`, then
# one `swarmd worker` with no flags (its defaults: a process per core, `auto` slots, mirror
# on) burns them down; prints first -> last completion as `swarmd bench` does. Compare with
# `swarmd bench` run just before/after: issue 13 asks for >= 0.9 of it.
# BIN=path/to/swarmd, N=count. PUBLISH_DURING=1 starts the worker first and publishes while
# it runs, so the window holds the producer's work too (as the legacy intake's does).
set -e
source "$(dirname "$0")/bench-common.sh" bw
unset SWARM_WORKER_PROCESSES SWARM_RUNTIME_THREADS SWARM_CONCURRENCY
python3 -c "
import json
for i in range($N):
    print(json.dumps({'agent_type': 'echo', 'data': {'i': i}, 'priority': i % 10}))
" > /tmp/bw_$TAG.jsonl
$BIN migrate >/dev/null
if [ "${PUBLISH_DURING:-0}" = 1 ]; then
  $BIN worker --no-migrate >/tmp/bw_w.log 2>&1 & W=$!
  sleep 2
  $BIN publish --file /tmp/bw_$TAG.jsonl >/dev/null 2>&1
else
  $BIN publish --file /tmp/bw_$TAG.jsonl >/dev/null 2>&1
  $BIN worker --no-migrate >/tmp/bw_w.log 2>&1 & W=$!
fi
wait_completed
kill $W; wait $W 2>/dev/null || true
report_and_clean_up
rm -f /tmp/bw_$TAG.jsonl
