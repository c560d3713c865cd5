"""Atomic file and directory writes: a reader never sees a half-written output."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_MARK = ".tmp-"


def temp_sibling(final: Path) -> Path:
    """A hidden temp name in the same directory (same filesystem, so rename is atomic)."""
    return final.with_name(f"{TMP_MARK}{final.name}.{uuid.uuid4().hex[:8]}")


@contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yield a temp path; on success rename it to `final`, on error remove it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temp directory; on success it replaces `final` whole, on error it is removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(final)
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            old = temp_sibling(final)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_path(path: Path) -> None:
    """Remove a file or a directory tree; a missing one is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_temp_leftovers(root: Path) -> int:
    """Delete temp files/dirs left by a killed process; returns how many were removed."""
    removed = 0
    if not root.exists():
        return 0
    for path in sorted(root.rglob(f"{TMP_MARK}*"), key=lambda p: len(p.parts), reverse=True):
        remove_path(path)
        removed += 1
    return removed
