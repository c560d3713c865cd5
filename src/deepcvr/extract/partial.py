"""Fetch one file into place through a hidden, locked partial file: resumable, verified.

The partial (`.tmp-NAME.part`) sits beside the final name, with a small state file saying which
version of which source it holds. The next run resumes it only if the source still shows that
version; it is kept after a run killed mid-transfer or out of retries, and removed after any
other failure. The final name appears only once size and checksums match.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from deepcvr.errors import DataError
from deepcvr.extract.retry import GaveUp, RetryBudget
from deepcvr.extract.sources import Options, Remote, Source
from deepcvr.extract.verify import Digests, Expected, Sink, verify
from deepcvr.fsutil import TMP_MARK, atomic_file
from deepcvr.progress import progress

log = logging.getLogger("deepcvr")


class NoSpace(DataError):
    """The file cannot fit: found before fetching, so what is there stays resumable."""


@dataclass(frozen=True)
class Fetched:
    digests: Digests
    checks: list[str]
    resumed: int  # bytes already there from an earlier run
    retries: int


def partial_path(final: Path) -> Path:
    return final.with_name(f"{TMP_MARK}{final.name}.part")


def fetch_verified(
    src: Source, remote: Remote, final: Path, exp: Expected, options: Options
) -> Fetched:
    """Fetch `remote` to `final` (replacing it) only if it verifies; DataError otherwise."""
    partial = partial_path(final)
    state = partial.with_name(partial.name + ".json")
    sink = Sink(partial, final, md5=exp.md5 is not None)
    sink.open()
    budget = RetryBudget(remote.uri, options.max_retry_seconds)
    keep = placed = False
    try:
        with progress(f"download {remote.name}", total=remote.size, unit="B") as advance:
            if _resumable(sink, state, remote):
                sink.resume(advance)
                log.info(
                    "%s: resuming a partial download at %s bytes", remote.name, f"{sink.size:,}"
                )
            else:
                sink.restart()
                _write_state(state, remote)
            resumed = sink.size
            try:
                _check_space(final, remote.size, sink.size)
                src.fetch(remote, sink, budget, advance)
            except (GaveUp, NoSpace):
                keep = remote.version is not None  # a later run resumes it
                raise
            digests = sink.finish()
        checks = verify(remote.uri, digests, exp)
        try:
            os.replace(partial, final)  # still locked: nobody else writes this partial
            placed = True
        except OSError as e:
            raise DataError(f"{final}: cannot rename into place ({e.strerror or e})") from None
    except (KeyboardInterrupt, SystemExit):
        keep = True
        raise
    finally:
        keep = keep and sink.size > 0
        sink.close(discard=not (keep or placed))
        if keep:
            log.warning("%s: kept the partial download; the next run resumes it", remote.name)
        else:
            state.unlink(missing_ok=True)
    return Fetched(digests, checks, resumed, budget.retries)


def _resumable(sink: Sink, state: Path, remote: Remote) -> bool:
    size = sink.existing_size()
    if size == 0 or remote.version is None:
        return False
    try:
        saved = json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    same = {"source": remote.uri, "version": remote.version, "bytes": remote.size}
    return saved == same and (remote.size is None or size <= remote.size)


def _write_state(state: Path, remote: Remote) -> None:
    data = {"source": remote.uri, "version": remote.version, "bytes": remote.size}
    with contextlib.suppress(OSError), atomic_file(state) as tmp:  # no state: no resume, no harm
        tmp.write_text(json.dumps(data), encoding="utf-8")


def _check_space(final: Path, size: int | None, have: int) -> None:
    """Fail before fetching gigabytes that cannot fit."""
    if size is None:
        return
    need, free = size - have, shutil.disk_usage(final.parent).free
    if need > free:
        raise NoSpace(
            f"{final}: not enough space: {need:,} more bytes needed, {free:,} free; "
            "free space or choose another workspace"
        )
