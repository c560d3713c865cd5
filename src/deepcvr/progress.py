"""Progress feedback: a Rich bar on a terminal, plain periodic log lines otherwise (CI)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger("deepcvr")

LOG_EVERY_SECONDS = 5.0


def _is_tty() -> bool:
    return sys.stderr.isatty()


def _human(n: float, unit: str) -> str:
    if unit == "B":
        for suffix in ("B", "KB", "MB", "GB", "TB"):
            if abs(n) < 1000 or suffix == "TB":
                return f"{n:,.1f} {suffix}" if suffix != "B" else f"{n:,.0f} B"
            n /= 1000
    return f"{n:,.0f} {unit}"


@contextmanager
def progress(
    description: str, total: int | None, unit: str = "B"
) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`; thread-safe, so workers may report from threads."""
    lock = threading.Lock()
    if _is_tty():
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        amount = (
            (DownloadColumn(), TransferSpeedColumn()) if unit == "B" else (MofNCompleteColumn(),)
        )
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            *amount,
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        ) as bar:
            task = bar.add_task(description, total=total)

            def advance(n: int) -> None:
                with lock:
                    bar.advance(task, n)

            yield advance
        return

    start = time.monotonic()
    state = {"done": 0, "last": start}

    def advance(n: int) -> None:
        with lock:
            state["done"] += n
            now = time.monotonic()
            if now - state["last"] >= LOG_EVERY_SECONDS:
                state["last"] = now
                _log_line(description, state["done"], total, unit, now - start)

    yield advance
    _log_line(description, state["done"], total, unit, time.monotonic() - start, final=True)


def _log_line(
    description: str, done: int, total: int | None, unit: str, elapsed: float, final: bool = False
) -> None:
    rate = done / elapsed if elapsed > 0 else 0.0
    share = f" ({100 * done / total:.0f}%)" if total else ""
    of = f" / {_human(total, unit)}" if total else ""
    verb = "done" if final else "progress"
    log.info(
        "%s %s: %s%s%s, %s/s, %.1f s",
        description,
        verb,
        _human(done, unit),
        of,
        share,
        _human(rate, unit),
        elapsed,
    )
