"""SwarmDirector for Python: run your agents on the fleet (``python3 -m swarmd.agent``)
and publish to it (``swarmd.Client``).

Standard library only. See ``swarmd.agent`` for the agent side, ``swarmd.client`` for the
producer's.
"""

__all__ = ["Client", "Permanent", "Retryable", "SwarmError"]
__version__ = "0.1.0"


class Retryable(Exception):
    """A passing failure: the task is tried again, after ``retry_after`` seconds when
    given (an upstream's ``Retry-After``), else after the fleet's backoff delay."""

    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.retry_after = retry_after


class Permanent(Exception):
    """The input can never succeed: the task ends dead at once, with this message."""


from .client import Client, SwarmError  # noqa: E402  (after the exceptions agents import)
