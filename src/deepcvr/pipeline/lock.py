"""One run at a time per workspace: an exclusive flock on WORKSPACE/.deepcvr/run.lock.

The kernel drops a flock when its holder dies, so a lock left by a killed process is never
stale for long: the next run takes it, reports the dead holder and closes its run record.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from deepcvr.errors import DeepCVRError
from deepcvr.metadata import STORE_DIR, MetadataStore, utc_now

log = logging.getLogger("deepcvr")


class WorkspaceBusy(DeepCVRError):
    exit_code = 3


@contextmanager
def workspace_lock(workspace: Path, run_id: str, store: MetadataStore) -> Iterator[None]:
    path = workspace / STORE_DIR / "run.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            raise WorkspaceBusy(
                f"workspace {workspace} is in use by run {holder.get('run_id', '?')} "
                f"(pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started "
                f"{holder.get('started_at', '?')}); wait for it to finish or stop it"
            ) from None
        previous = _read(fd)
        if previous.get("pid") and not _alive(previous):
            log.warning(
                "cleared the stale lock of run %s (pid %s is gone)",
                previous.get("run_id"),
                previous.get("pid"),
            )
        for run in store.close_stale_runs("the process running it died (killed or crashed)"):
            log.warning(
                "run %s had stopped without finishing (pid %s); marked interrupted",
                run["run_id"],
                run["pid"],
            )
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            json.dumps(
                {
                    "run_id": run_id,
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started_at": utc_now(),
                }
            ).encode(),
            0,
        )
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read(fd: int) -> dict[str, object]:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}


def _alive(holder: dict[str, object]) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # cannot tell for another host: assume alive
    pid = holder.get("pid")
    return isinstance(pid, int) and psutil.pid_exists(pid)
