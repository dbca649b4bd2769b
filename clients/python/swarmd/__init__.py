"""SwarmDirector for Python: run your agents on the fleet (``python3 -m swarmd.agent``).

Standard library only. See ``swarmd.agent`` for the agent side.
"""

__all__ = ["Permanent", "Retryable"]
__version__ = "0.1.0"


class Retryable(Exception):
    """A passing failure: the task is tried again, after ``retry_after`` seconds when
    given (an upstream's ``Retry-After``), else after the fleet's backoff delay."""

    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.retry_after = retry_after


class Permanent(Exception):
    """The input can never succeed: the task ends dead at once, with this message."""
