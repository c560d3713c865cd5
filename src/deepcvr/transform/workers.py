"""Worker processes for chunks: spawned, bounded in flight, results in submission order."""

from __future__ import annotations

import os
import signal
import sys
import threading
import types
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from typing import TYPE_CHECKING, Any

from deepcvr import cancel
from deepcvr.malloc import keep_freed_memory_env
from deepcvr.rawio import SharedBytes, SharedSlots

if TYPE_CHECKING:  # the chunk code (Polars, Arrow) loads in the workers, not before they start
    from deepcvr.transform.chunks import ChunkSpec

# A chunk's buffers (its bytes, the joined feature lists, the CSV Polars reads) are megabytes
# each, allocated afresh per chunk: kept by glibc (deepcvr.malloc) and by Polars' jemalloc
# (below, returned after 5 s idle), they do not fault their pages in again for every chunk
# (~5,000 page faults and 8-10 % of a worker's time per 8 MB chunk).
# Polars writes its own jemalloc defaults into the environment when imported, and puts them
# before any value it finds: appended, these options come last in each worker and win.
JEMALLOC_CONF = "_RJEM_MALLOC_CONF"
_KEEP_FREED_JEMALLOC = "dirty_decay_ms:5000,muzzy_decay_ms:5000"


class ChunkRunner:
    """Runs chunks in worker processes (or inline for one worker), yielding in submission order.

    The workers start at once and load the chunk code themselves (0.3 s of imports each), so a
    caller that creates the runner first has them ready while it loads its own modules and plans
    the first chunks."""

    def __init__(self, workers: int, chunk_bytes: int = 8 << 20) -> None:
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None
        self._exiting: threading.Thread | None = None
        # Where the planner reads the chunks of files for the workers: one per chunk in flight
        # (see run), plus the one being read. Inline, the chunk code reads its own.
        self.slots: SharedSlots | None = None
        if workers > 1:
            # Spawned workers get a fresh Polars thread pool sized so workers x threads = cores;
            # forking a process that already runs Polars threads can deadlock.
            threads = max(1, (os.cpu_count() or 1) // workers)
            env = keep_freed_memory_env()
            env[JEMALLOC_CONF] = ",".join(
                filter(None, [os.environ.get(JEMALLOC_CONF), _KEEP_FREED_JEMALLOC])
            )
            env["POLARS_MAX_THREADS"] = str(threads)
            saved = {name: os.environ.get(name) for name in env}
            os.environ.update(env)
            # A spawned child imports the parent's __main__ again (the CLI: typer, rich,
            # pydantic, 0.3 s per worker) unless __main__ names no file or module; the workers
            # only need the chunk code, which they import by name when unpickling the calls.
            main = sys.modules["__main__"]
            sys.modules["__main__"] = types.ModuleType("__main__")
            try:
                self.pool = ProcessPoolExecutor(
                    workers, mp_context=get_context("spawn"), initializer=_start_worker
                )
                # Each submission to a pool with no idle worker starts one, synchronously: all
                # start now, while the variables are set, and import in parallel to the caller.
                for _ in range(workers):
                    self.pool.submit(_noop, 0)
                self.slots = SharedSlots(2 * workers + 2, chunk_bytes)
            finally:
                sys.modules["__main__"] = main
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value

    def run(
        self, jobs: Iterable[tuple[ChunkSpec, tuple[Any, ...]]]
    ) -> Iterator[tuple[ChunkSpec, dict[str, Any]]]:
        from deepcvr.transform.chunks import run_chunk

        if self.pool is None:
            for spec, args in jobs:
                cancel.check()
                yield spec, run_chunk(spec, *args)
            return
        pending: deque[tuple[ChunkSpec, Future[dict[str, Any]], Any]] = deque()
        for spec, args in jobs:
            cancel.check()
            pending.append((spec, self.pool.submit(run_chunk, spec, *args), args[-1]))
            if len(pending) > 2 * self.workers:  # bounded: memory does not grow with input
                yield self._done(*pending.popleft())
        while pending:
            yield self._done(*pending.popleft())

    def _done(
        self, spec: ChunkSpec, fut: Future[dict[str, Any]], data: Any
    ) -> tuple[ChunkSpec, dict[str, Any]]:
        """A chunk's result; the slot its bytes came in is free again."""
        try:
            return spec, fut.result()
        finally:
            self.give_back(data)

    def give_back(self, data: Any) -> None:
        """Free the slot of a chunk's bytes (a chunk that was not run, say resumed)."""
        if isinstance(data, SharedBytes) and self.slots is not None:
            self.slots.give_back(data.slot)

    def release(self) -> None:
        """No more chunks: the workers exit (and free their memory) while the caller goes on;
        `close` waits for them."""
        if self.pool is not None and self._exiting is None:
            self._exiting = threading.Thread(target=self.pool.shutdown, name="deepcvr-workers")
            self._exiting.start()

    def close(self, cancel: bool = False) -> None:
        if self._exiting is not None:
            self._exiting.join()
            self._exiting = None
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=cancel)
            self.pool = None
        if self.slots is not None:  # no worker reads them any more
            self.slots.close()
            self.slots = None


def _noop(_: int) -> None:
    return None


def _start_worker() -> None:
    """Ctrl-C goes to the whole process group; only the parent decides how to stop, so
    workers finish (or drop) their chunk cleanly instead of dying mid-write with a traceback.
    The chunk code is imported now, before the first chunk arrives."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import pyarrow.compute  # noqa: F401  (first used by a part's casts)

    import deepcvr.transform.chunks  # noqa: F401
