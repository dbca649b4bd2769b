"""Drives ``swarmd.Client`` against a real API and worker (tests/it/python_client.rs):
prints ``ok`` when every check passed."""

import os
import sys

from swarmd import Client, SwarmError

fleet = Client(os.environ["SWARM_TEST_API"], token=os.environ["SWARM_TEST_TOKEN"])

# The seed's execute_agents_batch: results in the order given.
outcomes = fleet.publish_and_wait(
    [{"agent_type": "echo", "data": {"n": n}} for n in range(5)]
    + [{"agent_type": "fail", "data": {"permanent": True}}],
    timeout=60,
)
assert [o["status"] for o in outcomes] == ["completed"] * 5 + ["dead"], outcomes
assert [o["result"] for o in outcomes[:5]] == [{"n": n} for n in range(5)], outcomes

# Longer than the API's own longest wait (1 s here): the client keeps asking.
slow = fleet.publish("sleep", {"ms": 2500}, priority=9)
task = fleet.wait(slow, timeout=30)
assert task["status"] == "completed", task

# More than one request's worth of tasks.
ids = fleet.publish_many({"agent_type": "echo", "data": n} for n in range(1500))
assert len(ids) == 1500 and len(set(ids)) == 1500
done = fleet.wait(ids[-3:], timeout=60)
assert [t["result"] for t in done] == [1497, 1498, 1499], done

# A task the API refuses: a typed error with its stable code.
try:
    fleet.publish("not a valid name!", {})
except SwarmError as error:
    assert error.status == 422 and error.code == "invalid_task", error
else:
    raise AssertionError("an invalid agent type was accepted")

print("ok")
sys.stdout.flush()
