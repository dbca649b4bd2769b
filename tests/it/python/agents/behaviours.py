"""Agents that misbehave on purpose, for the process-agent guarantees (tests/it/process_agents.rs)."""

import os
import sys
import time

from swarmd import Permanent, Retryable


def slow(data, ctx):
    """Reports progress every 50 ms for ``ms`` milliseconds; stops when cancelled."""
    steps = max(data.get("ms", 1000) // 50, 1)
    for step in range(steps):
        if ctx.cancelled:
            raise Permanent("stopped as asked")
        ctx.progress((step + 1) / steps, {"step": step + 1})
        time.sleep(0.05)
    return {"steps": steps, "resumed_from": ctx.checkpoint}


def killed_first(data, ctx):
    """On its first attempt writes its pid where the test reads it, then waits to be
    killed; later attempts answer at once."""
    if ctx.attempt == 1:
        with open(data["pid_file"], "w") as out:
            out.write(str(os.getpid()))
        time.sleep(60)
    return {"attempt": ctx.attempt, "pid": os.getpid()}


def maybe_hang(data):
    """With ``hang``, never answers and ignores cancels (only a kill stops it); else echoes."""
    while data.get("hang"):
        time.sleep(1)
    return data


def echo(data):
    print(f"echoing {data!r}")  # goes to stderr: the worker logs it under the task
    return data


def rate_limited(data, ctx):
    if ctx.attempt == 1:
        raise Retryable("slow down", retry_after=2)
    return {"attempt": ctx.attempt}


def refuses(data):
    raise Permanent("this input can never work")


def crashes(data):
    raise KeyError("missing")


def hostile(data):
    """Writes ``data["write"]`` to the protocol's stdout itself, then waits."""
    kind = data["write"]
    out = sys.__stdout__
    if kind == "nul":
        out.write("\0\n")
    elif kind == "not json":
        out.write("hello there\n")
    elif kind == "not an object":
        out.write("[1, 2, 3]\n")
    elif kind == "no id":
        out.write('{"type": "result", "result": 1}\n')
    elif kind == "other id":
        out.write('{"type": "result", "id": "0193e0a0-0000-7000-8000-000000000001", "result": 1}\n')
    elif kind == "100 MB":
        chunk = "x" * (1 << 20)
        for _ in range(100):
            out.write(chunk)
    out.flush()
    time.sleep(30)


def pid(data):
    """Says which process ran it."""
    return {"pid": os.getpid()}
