"""Verification of downloaded files: a hashing partial-file writer, SHA256SUMS manifests,
the size/checksum check, and the receipt that lets a later run trust a verified file.

Checksums are computed while the bytes stream in (never by reading the file back), except when
a partial file left by an earlier run is resumed: its prefix is hashed once from disk.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from deepcvr.errors import DataError
from deepcvr.fsutil import atomic_file

try:  # POSIX advisory locks keep two runs from writing the same partial file
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

READ_BLOCK = 4 * 1024 * 1024
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
MANIFEST_NAME = "SHA256SUMS"
MAX_MANIFEST_BYTES = 1024 * 1024
Advance = Callable[[int], None]


@dataclass(frozen=True)
class Digests:
    size: int
    sha256: str
    md5: str | None = None


@dataclass
class Expected:
    """What a file must match; `*_from` say where each value came from (for the log)."""

    size: int | None = None
    sha256: str | None = None
    sha256_from: str = ""
    md5: str | None = None
    md5_from: str = ""
    notes: list[str] = field(default_factory=list)  # why a content check is missing

    @property
    def has_checksum(self) -> bool:
        return bool(self.sha256 or self.md5)


def verify(shown: str, got: Digests, exp: Expected) -> list[str]:
    """The checks that passed, e.g. ['size', 'md5 (S3 ETag)']; DataError on any mismatch."""
    checks = []
    if exp.size is not None:
        if got.size != exp.size:
            raise DataError(
                f"{shown}: size mismatch: got {got.size:,} bytes, the source has "
                f"{exp.size:,}; truncated or changed transfer, run again"
            )
        checks.append("size")
    if exp.md5 is not None:
        if got.md5 != exp.md5:
            raise DataError(
                f"{shown}: checksum mismatch: md5 {got.md5} != {exp.md5} from the "
                f"{exp.md5_from}; corrupted in transit, run again"
            )
        checks.append(f"md5 ({exp.md5_from})")
    if exp.sha256 is not None:
        if got.sha256 != exp.sha256:
            raise DataError(
                f"{shown}: checksum mismatch: sha256 {got.sha256} != {exp.sha256} from the "
                f"{exp.sha256_from}; corrupted in transit or a wrong manifest"
            )
        checks.append(f"sha256 ({exp.sha256_from})")
    return checks


# --- writing ----------------------------------------------------------------------------------


class Sink:
    """The hidden partial file of one download: appends in order, hashing as it writes.

    Opened with an exclusive lock; `resume=True` keeps (and hashes) what is already there.
    Write errors become one-line DataErrors naming `final`; on ENOSPC the partial is removed.
    """

    def __init__(self, path: Path, final: Path, md5: bool) -> None:
        self.path, self.final, self.want_md5 = path, final, md5
        self.size = 0
        self._f: BinaryIO | None = None
        self._reset_hashes()

    def _reset_hashes(self) -> None:
        self._sha = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False) if self.want_md5 else None

    def open(self) -> None:
        """Open (creating if needed) and lock the partial file; its content is kept."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = open(self.path, "a+b", buffering=0)  # noqa: SIM115 - closed in close()
        except OSError as e:
            raise self._error(e) from None
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                raise DataError(
                    f"{self.final}: another process is downloading this file right now; "
                    "wait for it or use another workspace"
                ) from None
        self._f = f

    def existing_size(self) -> int:
        assert self._f is not None
        return os.fstat(self._f.fileno()).st_size

    def resume(self, advance: Advance | None = None) -> None:
        """Keep what an earlier run wrote: hash that prefix once, append after it."""
        assert self._f is not None
        self.size = 0
        self._reset_hashes()
        try:
            self._f.seek(0)
            while block := self._f.read(READ_BLOCK):
                self._update(block)
                if advance is not None:
                    advance(len(block))
        except OSError as e:
            raise self._error(e) from None

    def _update(self, data: bytes | memoryview) -> None:
        self._sha.update(data)
        if self._md5 is not None:
            self._md5.update(data)
        self.size += len(data)

    def write(self, data: bytes) -> None:
        assert self._f is not None
        view = memoryview(data)
        try:
            while view:  # a raw write may be partial
                view = view[self._f.write(view) or 0 :]
        except OSError as e:
            raise self._error(e) from None
        self._update(data)

    def restart(self) -> None:
        """Drop everything written so far (the server sent the whole file again)."""
        assert self._f is not None
        try:
            self._f.truncate(0)
            self._f.seek(0)
        except OSError as e:
            raise self._error(e) from None
        self.size = 0
        self._reset_hashes()

    def finish(self) -> Digests:
        """Flush to disk (a crash after the rename must not leave a short 'verified' file)."""
        assert self._f is not None
        try:
            os.fsync(self._f.fileno())
        except OSError as e:
            raise self._error(e) from None
        return Digests(
            self.size, self._sha.hexdigest(), self._md5.hexdigest() if self._md5 else None
        )

    def close(self, discard: bool = False) -> None:
        if self._f is not None:
            self._f.close()  # releases the lock
            self._f = None
        if discard:
            self.path.unlink(missing_ok=True)

    def _error(self, e: OSError) -> DataError:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            self.close(discard=True)  # a partial cannot be finished without space: free it
            return DataError(
                f"{self.final}: no space left on device while downloading; "
                "free space or choose another workspace"
            )
        return DataError(
            f"{self.final}: cannot write ({e.strerror or e}); "
            "check permissions or choose another workspace"
        )


def hash_file(path: Path, md5: bool, advance: Advance | None = None) -> Digests:
    """Digests of a file already on disk (an existing download, a hard link)."""
    sha = hashlib.sha256()
    m = hashlib.md5(usedforsecurity=False) if md5 else None
    size = 0
    try:
        with open(path, "rb") as f:
            while block := f.read(READ_BLOCK):
                sha.update(block)
                if m is not None:
                    m.update(block)
                size += len(block)
                if advance is not None:
                    advance(len(block))
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    return Digests(size, sha.hexdigest(), m.hexdigest() if m else None)


# --- manifests --------------------------------------------------------------------------------


def parse_sha256sums(text: str, where: str) -> dict[str, str]:
    """`sha256sum` output (`HEX  name` or `HEX *name`) -> {name: hex}; DataError if malformed."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        digest, _, name = line.partition(" ")
        name = name.strip().lstrip("*")
        name = name[2:] if name.startswith("./") else name
        if not SHA256_HEX.fullmatch(digest.lower()) or not name:
            raise DataError(f"{where}: line {n} is not 'SHA256  NAME': {line[:80]!r}")
        out[name] = digest.lower()
    return out


def check_sha256_param(value: str) -> str:
    value = value.strip().lower()
    if not SHA256_HEX.fullmatch(value):
        raise ValueError(f"not a SHA-256 (64 hex digits): {value[:70]!r}")
    return value


# --- receipts ---------------------------------------------------------------------------------


def receipt_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.download.json")


def read_receipt(final: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(receipt_path(final).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_receipt(final: Path, data: dict[str, Any]) -> None:
    """What was verified, against which version of the source: a later run trusts the file
    only if the source still shows that version and the file still has that sha256."""
    with contextlib.suppress(OSError), atomic_file(receipt_path(final)) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
