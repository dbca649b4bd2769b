"""Publish tasks to a SwarmDirector fleet and wait for their outcomes, over its HTTP API.

    from swarmd import Client
    fleet = Client("http://127.0.0.1:8080", token="…")
    outcomes = fleet.publish_and_wait([
        {"agent_type": "email", "data": {"to": "ann@example.org"}},
        {"agent_type": "quality", "data": {"text": "Ship it."}},
    ], timeout=60)

Standard library only; one kept-alive connection per client (not shared between threads).
"""

import http.client
import json
import time
import urllib.parse

#: Statuses after which nothing more happens to a task.
FINAL = ("completed", "dead", "cancelled")
#: Tasks per request of ``publish_many`` (the API takes up to 1,000 at once).
BATCH = 1000
#: Longest wait one request asks of the API (it cuts longer ones to its own maximum).
LONGEST_WAIT = 60


class SwarmError(Exception):
    """The API refused a request: ``status`` (HTTP), ``code`` (stable) and its message."""

    def __init__(self, status, code, message):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class Client:
    """The HTTP API of a fleet at ``url``, with a write (or read) ``token``."""

    def __init__(self, url="http://127.0.0.1:8080", token=None, timeout=90):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{url!r}: the URL must start with http:// or https://")
        self._https = parts.scheme == "https"
        self._host = parts.netloc
        self._base = parts.path.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._connection = None

    def close(self):
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()

    def _request(self, method, path, body=None, retry=True):
        if self._connection is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._connection = kind(self._host, timeout=self._timeout)
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            self._connection.request(method, self._base + path, body=data, headers=headers)
            response = self._connection.getresponse()
            raw = response.read()
        except (http.client.HTTPException, ConnectionError):
            # A kept-alive connection the server closed meanwhile: once more on a new one.
            self.close()
            if not retry:
                raise
            return self._request(method, path, body, retry=False)
        answer = json.loads(raw) if raw else None
        if response.status >= 400:
            error = (answer or {}).get("error", {}) if isinstance(answer, dict) else {}
            raise SwarmError(response.status, error.get("code", "error"),
                             error.get("message", raw[:200].decode(errors="replace")))
        return answer

    @staticmethod
    def _task(agent_type, data, options):
        task = {"agent_type": agent_type, "data": data}
        task.update({k: v for k, v in options.items() if v is not None})
        return task

    def publish(self, agent_type, data, **options):
        """Publishes one task; returns its id. ``options``: priority, max_attempts, timeout,
        idempotency_key, unique_for_secs, not_before, expires_at, id."""
        return self._request("POST", "/v1/tasks", self._task(agent_type, data, options))["id"]

    def publish_many(self, tasks):
        """Publishes ``tasks`` (dicts with agent_type, data and any option); returns their
        ids in order."""
        ids = []
        tasks = list(tasks)
        for start in range(0, len(tasks), BATCH):
            ids.extend(self._request("POST", "/v1/tasks", {"tasks": tasks[start:start + BATCH]})["ids"])
        return ids

    def get(self, task_id):
        """The task as it stands: status, attempts, result, errors, progress …"""
        return self._request("GET", f"/v1/tasks/{task_id}")

    def wait(self, ids, timeout=60):
        """Waits until every task of ``ids`` ends (completed, dead or cancelled) or
        ``timeout`` seconds pass; returns each task as it stands then, in order."""
        single = isinstance(ids, str)
        ids = [ids] if single else list(ids)
        deadline = time.monotonic() + timeout
        tasks = {}
        for task_id in ids:
            while True:
                left = deadline - time.monotonic()
                wait = max(0.0, min(left, LONGEST_WAIT))
                task = self._request("GET", f"/v1/tasks/{task_id}?wait={wait:.3f}")
                if task["status"] in FINAL or left <= 0:
                    break
            tasks[task_id] = task
        found = [tasks[task_id] for task_id in ids]
        return found[0] if single else found

    def publish_and_wait(self, tasks, timeout=60):
        """Publishes ``tasks`` and waits for them all — the seed's
        ``execute_agents_batch`` in one call; returns their outcomes in order (each with
        ``id``, ``status``, ``attempts``, ``result``, ``error``)."""
        tasks = list(tasks)
        deadline = time.monotonic() + timeout
        outcomes = []
        for start in range(0, len(tasks), BATCH):
            left = max(0.0, min(deadline - time.monotonic(), LONGEST_WAIT))
            answer = self._request("POST", f"/v1/tasks?wait={left:.3f}",
                                   {"tasks": tasks[start:start + BATCH]})
            outcomes.extend(answer["outcomes"])
        unfinished = [o["id"] for o in outcomes if o["status"] not in FINAL]
        if unfinished:
            later = {t["id"]: t for t in self.wait(unfinished, max(0.0, deadline - time.monotonic()))}
            outcomes = [_outcome(later[o["id"]]) if o["id"] in later else o for o in outcomes]
        return outcomes


def _outcome(task):
    return {"id": task["id"], "status": task["status"], "attempts": task["attempts"],
            "result": task.get("result"), "error": task.get("last_error"),
            "completed_at": task.get("completed_at")}
