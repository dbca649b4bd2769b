"""Serve Python agents to a SwarmDirector worker over the process protocol, or over HTTP.

    python3 -m swarmd.agent [TYPE=]MODULE:NAME [...]
    python3 -m swarmd.agent --http HOST:PORT [TYPE=]MODULE:NAME [...]

The worker starts this as a long-lived child process (``[agents.<name>] command`` in its
settings) and sends it one task at a time, one JSON object per line on stdin; it answers on
stdout (``schemas/agent-protocol.md``). NAME is either

- a class with the seed's ``process_task(self, data)`` (optionally ``process_task(self,
  data, ctx)``), instantiated once per process: its return value is the result; or
- a function ``(data, ctx)`` (or ``(data)``).

With one NAME it serves every agent type the worker sends it (the worker sends only the
type it was declared under); with several, each serves the type written before ``=``, or
NAME itself. ``async def`` handlers are awaited. Exceptions: ``Permanent`` ends the task
(dead, no retry), ``Retryable`` and any other exception cost the attempt and are retried.

Only the standard library. stdout belongs to the protocol: ``print`` in an agent goes to
stderr, which the worker logs under the task's id.

With ``--http`` it serves the same agents as an HTTP agent (``[agents.<name>] url``): each
POST carries a task, the answer is 200 with the result, 422 for ``Permanent``, 503 (with
``Retry-After`` when ``retry_after`` was given) for ``Retryable``, 500 for any other
exception. Progress and cancel have no channel over HTTP: ``ctx.progress`` does nothing and
``ctx.cancelled`` stays false (the worker closes the request of a cancelled task).
"""

import asyncio
import http.server
import importlib
import math
import inspect
import json
import os
import select
import sys
import threading
import traceback

from . import Permanent, Retryable

PROTOCOL = 1


class Context:
    """What an agent knows of the task it runs, and how it reports progress."""

    def __init__(self, message, out, control):
        self.task_id = message["id"]
        self.agent_type = message.get("agent_type")
        self.attempt = message.get("attempt", 1)
        self.max_attempts = message.get("max_attempts", 1)
        self.checkpoint = message.get("checkpoint")
        self.deadline = message.get("deadline")
        self.timeout_ms = message.get("timeout_ms")
        self.traceparent = message.get("traceparent")
        self._out = out
        self._control = control

    def progress(self, fraction, detail=None):
        """Reports how far the task is (0..1) and what to resume from after a retry
        (``detail``, seen again as ``ctx.checkpoint``)."""
        self._out.send({"type": "progress", "id": self.task_id,
                        "fraction": float(fraction), "detail": detail})

    @property
    def cancelled(self):
        """True once the worker asked to stop this task: return (or raise) soon."""
        return self._control.is_cancelled(self.task_id)


class _Out:
    """The protocol's stdout: one compact JSON line per message, written at once (one
    system call, no buffer between the agent and the worker)."""

    def __init__(self, stream):
        self._fd = stream.fileno()
        self._lock = threading.Lock()

    def send(self, message):
        line = json.dumps(message, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False, default=_unserialisable).encode() + b"\n"
        with self._lock:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view):]


def _unserialisable(value):
    raise TypeError(f"the result holds a {type(value).__name__}, which JSON cannot carry")


class _Control:
    """The worker's lines on stdin, read by the main loop (no thread: a hand-off per task
    cost more than the task). While a task runs, ``ctx.cancelled`` looks at what arrived
    without waiting: a ``cancel`` is remembered by task id, anything else kept in order."""

    def __init__(self, stream):
        self._fd = stream.fileno()
        self._buffer = b""
        self._pending = []
        self._cancelled = set()
        self._closed = False

    def _read_more(self, block):
        if not block and not select.select([self._fd], [], [], 0)[0]:
            return False
        chunk = os.read(self._fd, 1 << 16)
        if not chunk:
            self._closed = True
            return False
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except ValueError:
                print(f"swarmd.agent: ignoring a line that is not JSON: {line[:200]!r}",
                      file=sys.stderr)
                continue
            if isinstance(message, dict) and message.get("type") == "cancel":
                self._cancelled.add(message.get("id"))
            else:
                self._pending.append(message)
        return True

    def is_cancelled(self, task_id):
        while self._read_more(block=False):
            pass
        return task_id in self._cancelled

    def forget(self, task_id):
        self._cancelled.discard(task_id)

    def next_message(self):
        while not self._pending:
            if self._closed:
                return None
            self._read_more(block=True)
        return self._pending.pop(0)


def _handler(spec):
    """The callable ``(data, ctx)`` that ``MODULE:NAME`` names."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise SystemExit(f"swarmd.agent: {spec!r} is not MODULE:NAME")
    target = getattr(importlib.import_module(module_name), name)
    if inspect.isclass(target):
        instance = target()
        method = getattr(instance, "process_task", None)
        if method is None:
            raise SystemExit(f"swarmd.agent: {spec} has no process_task method")
        return _adapt(method)
    if callable(target):
        return _adapt(target)
    raise SystemExit(f"swarmd.agent: {spec} is neither a class nor a function")


def _adapt(function, wants_ctx=None):
    parameters = [p for p in inspect.signature(function).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if wants_ctx is None:
        wants_ctx = len(parameters) >= 2
    if wants_ctx:
        return lambda data, ctx: function(data, ctx)
    return lambda data, ctx: function(data)


def _run(handler, data, ctx):
    result = handler(data, ctx)
    if inspect.isawaitable(result):
        result = asyncio.run(_awaited(result))
    return result


async def _awaited(awaitable):
    return await awaitable


def serve(handlers, stdin=None, stdout=None):
    """Serves ``handlers`` (agent type, or None for any, → callable) until stdin closes."""
    out = _Out(stdout or sys.stdout)
    control = _Control(stdin or sys.stdin)
    out.send({"type": "ready", "protocol": PROTOCOL, "agents": sorted(k for k in handlers if k)})
    while True:
        message = control.next_message()
        if message is None:
            return
        if message.get("type") != "task":
            continue
        answer = _answer(handlers, message, out, control)
        answer.pop("_exception", None)
        try:
            out.send(answer)
        except (TypeError, ValueError) as error:
            out.send({"type": "error", "id": message["id"], "retryable": False,
                      "message": f"the result cannot be sent as JSON: {error}"})
        control.forget(message["id"])


def _answer(handlers, message, out, control):
    """The line that ends task ``message``: its result or its error."""
    task_id = message["id"]
    handler = handlers.get(message.get("agent_type")) or handlers.get(None)
    if handler is None:
        return {"type": "error", "id": task_id, "retryable": False,
                "message": f"this process serves {sorted(handlers)}, not {message.get('agent_type')!r}"}
    ctx = Context(message, out, control)
    try:
        result = _run(handler, message.get("data"), ctx)
    except Permanent as error:
        return {"type": "error", "id": task_id, "retryable": False, "message": str(error)}
    except Retryable as error:
        answer = {"type": "error", "id": task_id, "retryable": True, "message": str(error)}
        if error.retry_after is not None:
            answer["retry_after"] = float(error.retry_after)
        return answer
    except Exception as error:  # any other failure costs the attempt, as in the seed
        traceback.print_exc(file=sys.stderr)
        return {"type": "error", "id": task_id, "retryable": True, "_exception": True,
                "message": f"{type(error).__name__}: {error}"}
    if ctx.cancelled:
        return {"type": "error", "id": task_id, "retryable": False, "message": "cancelled"}
    return {"type": "result", "id": task_id, "result": result}


class _NoChannel:
    """Progress and cancel over HTTP: there is no channel back while a request runs."""

    def send(self, message):
        pass

    def is_cancelled(self, task_id):
        return False


def serve_http(handlers, address):
    """Serves ``handlers`` as an HTTP agent on ``address`` (host, port) until interrupted."""
    no_channel = _NoChannel()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the worker reuses its connections
        # Headers and body leave in one segment, at once: with Nagle's algorithm the body
        # waited for the worker's delayed ACK (40 ms a request).
        disable_nagle_algorithm = True

        def do_POST(self):
            try:
                length = int(self.headers.get("Content-Length", "0"))
                message = json.loads(self.rfile.read(length))
                if not isinstance(message, dict) or "id" not in message:
                    raise ValueError("not a task")
            except ValueError as error:
                return self._reply(400, {"error": f"the body is not a task: {error}"})
            answer = _answer(handlers, message, no_channel, no_channel)
            if answer["type"] == "result":
                try:
                    return self._reply(200, answer["result"])
                except (TypeError, ValueError) as error:
                    return self._reply(422, {"error": f"the result cannot be sent as JSON: {error}"})
            if not answer["retryable"]:
                return self._reply(422, {"error": answer["message"]})
            if "retry_after" in answer:
                return self._reply(503, {"error": answer["message"]},
                                   {"Retry-After": str(math.ceil(answer["retry_after"]))})
            return self._reply(500 if answer.get("_exception") else 503, {"error": answer["message"]})

        def _reply(self, status, body, headers=None):
            data = json.dumps(body, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False, default=_unserialisable).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            # One write for headers and body (end_headers would send the headers alone).
            self._headers_buffer.append(b"\r\n" + data)
            self.flush_headers()

        def log_message(self, format, *args):
            pass  # one line per task is the worker's to log

    class Server(http.server.ThreadingHTTPServer):
        # Workers open up to `concurrency` connections each at once: the default backlog
        # of 5 refused the rest, and their retries waited seconds.
        request_queue_size = 1024
        daemon_threads = True

    server = Server(address, Handler)
    print(f"swarmd.agent: serving {sorted(k for k in handlers if k) or 'any agent type'} "
          f"on http://{address[0]}:{server.server_address[1]}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2
    http_address = None
    if argv[0] == "--http":
        if len(argv) < 3:
            print("swarmd.agent: --http HOST:PORT MODULE:NAME [...]", file=sys.stderr)
            return 2
        host, _, port = argv[1].rpartition(":")
        http_address = (host or "127.0.0.1", int(port))
        argv = argv[2:]
    handlers = {}
    for spec in argv:
        agent_type, _, target = spec.rpartition("=") if "=" in spec.split(":")[0] else ("", "", spec)
        name = target.partition(":")[2]
        key = agent_type or (None if len(argv) == 1 else name)
        handlers[key] = _handler(target)
    if http_address is not None:
        serve_http(handlers, http_address)
        return 0
    # The protocol owns stdout: anything an agent prints goes to stderr.
    protocol_out = sys.stdout
    sys.stdout = sys.stderr
    serve(handlers, stdin=sys.stdin, stdout=protocol_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
