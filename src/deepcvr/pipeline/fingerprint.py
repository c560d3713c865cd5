"""Fingerprints for incremental runs: of files, directories, targets, and of a task as a whole.

Big files are fingerprinted by size and mtime (fast; the downloads carry full checksums), a
directory by the listing of its files, a task by its op, resolved params, the fingerprints of
its inputs and the deepcvr version (Dagster/Hamilton style): change any, and the task reruns.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import xxhash

from deepcvr import __version__
from deepcvr.fsutil import TMP_MARK


def _digest(obj: Any) -> str:
    return xxhash.xxh3_128_hexdigest(json.dumps(obj, sort_keys=True, default=str).encode())


def local_path(uri: str) -> Path | None:
    """The file behind a path or a `file://` / `duckdb:///` URI; None for remote targets."""
    if "://" not in uri:
        return Path(uri)
    scheme, rest = uri.split("://", 1)
    if scheme == "file":
        return Path(rest)
    if scheme == "duckdb":
        return Path(rest[1:])  # duckdb:///relative or duckdb:////absolute
    return None


def asset_fingerprint(uri: str) -> dict[str, Any] | None:
    """What a file or directory is now: bytes, files, digest; None if it does not exist or
    cannot be fingerprinted locally (a server database)."""
    path = local_path(uri)
    if path is None or not path.exists():
        return None
    if path.is_file():
        st = path.stat()
        return {
            "kind": "file",
            "bytes": st.st_size,
            "digest": _digest([st.st_size, st.st_mtime_ns]),
        }
    listing = []
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith((TMP_MARK, ".deepcvr")))
        for name in sorted(files):
            if name.startswith(TMP_MARK):
                continue
            st = os.stat(os.path.join(root, name))
            total += st.st_size
            listing.append(
                [os.path.relpath(os.path.join(root, name), path), st.st_size, st.st_mtime_ns]
            )
    return {"kind": "directory", "bytes": total, "files": len(listing), "digest": _digest(listing)}


def task_fingerprint(op: str, params: dict[str, Any], inputs: dict[str, Any]) -> str:
    return _digest({"op": op, "params": params, "inputs": inputs, "version": __version__})
