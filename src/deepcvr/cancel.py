"""Cooperative cancellation: Ctrl-C reaches the main thread only, while ops run in worker
threads. The runner requests a stop; long-running ops call `check()` between units of work
(chunks, tables, files) and stop cleanly, leaving only complete outputs behind."""

from __future__ import annotations

import threading

from deepcvr.errors import DeepCVRError

_stop = threading.Event()


class Interrupted(DeepCVRError):
    exit_code = 130


def request() -> None:
    _stop.set()


def reset() -> None:
    _stop.clear()


def requested() -> bool:
    return _stop.is_set()


def check() -> None:
    """Raise Interrupted if a stop was requested."""
    if _stop.is_set():
        raise Interrupted("interrupted")
