"""Retries for network transfers: exponential backoff with jitter, bounded in time.

The time bound counts from the last progress (bytes received, a part finished), not from the
start: a healthy but long transfer is never cut, a stuck one gives up after `seconds`.
"""

from __future__ import annotations

import logging
import random
import threading
import time

from deepcvr.errors import DataError

log = logging.getLogger("deepcvr")

BACKOFF_BASE = 0.5  # seconds before the first retry (tests lower it)
BACKOFF_CAP = 30.0  # longest single wait


class Retryable(Exception):
    """A transient failure (connection reset, timeout, 5xx, throttling): try again."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class GaveUp(DataError):
    """Retries ran out on a transient failure: a partial file may be resumed by a later run."""


class Aborted(Exception):
    """Another worker of the same transfer failed: stop quietly."""


def backoff(attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait before retry number `attempt` (1-based): 'equal jitter' exponential,
    so parallel workers hitting the same throttle do not retry in lockstep."""
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
    delay = random.uniform(delay / 2, delay)
    if retry_after is not None:  # the server said how long; respect it within the cap
        delay = max(delay, min(retry_after, BACKOFF_CAP))
    return delay


def parse_retry_after(value: str | None) -> float | None:
    """A `Retry-After` header in seconds (its HTTP-date form is rare enough to ignore)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class RetryBudget:
    """Shared by every request of one file: decides whether, and how long, to wait."""

    def __init__(self, what: str, seconds: float) -> None:
        self.what = what
        self.seconds = seconds
        self.retries = 0
        self._since = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def progressed(self) -> None:
        self._since = time.monotonic()

    def abort(self) -> None:
        self._stop.set()

    def check(self) -> None:
        if self._stop.is_set():
            raise Aborted

    def pause(self, attempt: int, error: Retryable) -> None:
        """Sleep before the next attempt, or raise a one-line DataError when time is up."""
        delay = backoff(attempt, error.retry_after)
        waited = time.monotonic() - self._since
        if waited + delay > self.seconds:
            raise GaveUp(
                f"{self.what}: {error.reason}; giving up after {attempt} failed attempt(s) "
                f"in {waited:.1f} s without progress (max_retry_seconds={self.seconds:g})"
            )
        with self._lock:
            self.retries += 1
        log.warning("%s: %s; retry %d in %.1f s", self.what, error.reason, attempt, delay)
        if self._stop.wait(delay):
            raise Aborted
