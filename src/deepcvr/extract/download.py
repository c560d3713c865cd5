"""Get the archives from a source into a directory, verified before anything can use them.

Per file: an existing file is kept only if it verifies against the source; otherwise the bytes
go to a hidden, locked partial file, hashed as they arrive, and the file is renamed into place
only after its size and checksums match (partial.py, which also resumes). Local sources on the
same filesystem are hard-linked instead of copied, and verified all the same.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepcvr.errors import DataError
from deepcvr.extract.partial import fetch_verified
from deepcvr.extract.sources import Options, Remote, Source, open_source
from deepcvr.extract.verify import (
    MANIFEST_NAME,
    Digests,
    Expected,
    hash_file,
    read_receipt,
    verify,
    write_receipt,
)
from deepcvr.fsutil import temp_sibling
from deepcvr.metadata import utc_now
from deepcvr.progress import progress

log = logging.getLogger("deepcvr")

FETCHED = ("downloaded", "copied", "linked")


@dataclass
class FileResult:
    name: str
    path: Path
    uri: str  # the source, safe to print
    status: str  # downloaded | copied | linked | skipped
    bytes: int
    sha256: str
    checks: list[str]
    transferred: int = 0  # bytes moved by this run (0 when skipped or linked)
    seconds: float = 0.0
    retries: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "path": str(self.path),
            "source": self.uri,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "checks": self.checks,
            "transferred": self.transferred,
            "seconds": round(self.seconds, 3),
            "retries": self.retries,
        }


@dataclass
class DownloadResult:
    source: str
    output: Path
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        moved = sum(f.transferred for f in self.files)
        return {
            "source": self.source,
            "output": str(self.output),
            "files": {f.name: f.as_dict() for f in self.files},
            "downloaded": sum(f.status in FETCHED for f in self.files),
            "skipped": sum(f.status == "skipped" for f in self.files),
            "bytes": moved,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(moved / 1e6 / self.seconds, 2) if self.seconds > 0 else 0.0,
        }


def download(
    source: str,
    output: Path,
    *,
    files: list[str] | None = None,
    keys: list[str] | None = None,
    sha256: Mapping[str, str] | None = None,
    force: bool = False,
    options: Options | None = None,
    on_file: Callable[[FileResult], None] | None = None,
) -> DownloadResult:
    """Fetch the chosen files of `source` into `output`; `on_file` sees each verified file."""
    options = options or Options()
    started = time.monotonic()
    src = open_source(source, options)
    try:
        remotes = src.remotes(files, keys)
        manifest, where = src.manifest()
        if where:
            log.info("sha256 manifest %s: %d file(s) listed", where, len(manifest))
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"{output}: cannot create ({e.strerror or e})") from None
        log.info("download: %d file(s) from %s to %s", len(remotes), src.shown, output)
        result = DownloadResult(src.shown, output)
        for remote in remotes:
            exp = expected(remote, manifest, sha256 or {})
            res = _one(src, remote, output / remote.name, exp, force, options)
            result.files.append(res)
            if on_file is not None:
                on_file(res)
    finally:
        src.close()
    result.seconds = time.monotonic() - started
    return result


def expected(remote: Remote, manifest: Mapping[str, str], given: Mapping[str, str]) -> Expected:
    """What `remote` must match; a `sha256:` param beats SHA256SUMS beats S3's own checksum."""
    exp = Expected(remote.size, md5=remote.md5, md5_from=remote.md5_from, notes=list(remote.notes))
    base = remote.name.rsplit("/", 1)[-1]
    for table, label in ((given, "sha256 param"), (manifest, MANIFEST_NAME)):
        value = table.get(remote.name) or table.get(base)
        if value:
            exp.sha256, exp.sha256_from = value, label
            return exp
    if remote.sha256:
        exp.sha256, exp.sha256_from = remote.sha256, "S3 object checksum"
    return exp


def _one(
    src: Source, remote: Remote, final: Path, exp: Expected, force: bool, options: Options
) -> FileResult:
    started = time.monotonic()
    local = src.local_path(remote)
    if local is not None and final.exists() and _samefile(local, final):
        digests = _hash(final, exp, "verify")
        checks = verify(str(final), digests, exp)  # the user's own file: report, never delete
        return _done(remote, final, "skipped", digests, [*checks, "same file"], exp, started)
    if final.exists() and not force:
        res = _existing(remote, final, exp, started)
        if res is not None:
            return res
    if local is not None and options.link:
        res = _link(remote, local, final, exp, started)
        if res is not None:
            return res
    return _fetch(src, remote, final, exp, options, started)


def _existing(remote: Remote, final: Path, exp: Expected, started: float) -> FileResult | None:
    """A verified result if the file already there matches the source, else None."""
    size = final.stat().st_size
    if exp.size is not None and size != exp.size:
        log.info(
            "%s: %s bytes here, %s at the source: downloading again",
            final.name,
            f"{size:,}",
            f"{exp.size:,}",
        )
        return None
    receipt = read_receipt(final)
    trusted = (
        receipt is not None
        and remote.version is not None
        and receipt.get("source") == remote.uri
        and receipt.get("version") == remote.version
        and receipt.get("bytes") == size
    )
    if not exp.has_checksum and not trusted:
        log.info(
            "%s: exists, but the source gives no checksum and no receipt of a verified "
            "download matches it: downloading again",
            final.name,
        )
        return None
    digests = _hash(final, exp, "verify")
    try:
        checks = verify(str(final), digests, exp)
    except DataError as e:
        log.warning("%s: existing file does not verify (%s): downloading again", final.name, e)
        return None
    if not exp.has_checksum:
        assert receipt is not None
        if digests.sha256 != receipt.get("sha256"):
            log.warning("%s: changed since it was verified: downloading again", final.name)
            return None
        checks.append("sha256 (receipt of the verified download)")
    return _done(remote, final, "skipped", digests, checks, exp, started)


def _link(
    remote: Remote, local: Path, final: Path, exp: Expected, started: float
) -> FileResult | None:
    """Hard-link a local source (same filesystem): no copy, but still verified."""
    tmp = temp_sibling(final)
    try:
        os.link(local, tmp)
    except OSError as e:  # another filesystem, or links not supported: copy instead
        log.debug("%s: cannot hard-link (%s); copying", local, e.strerror or e)
        return None
    try:
        digests = _hash(tmp, exp, "verify")
        checks = verify(remote.uri, digests, exp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return _done(remote, final, "linked", digests, checks, exp, started)


def _fetch(
    src: Source, remote: Remote, final: Path, exp: Expected, options: Options, started: float
) -> FileResult:
    got = fetch_verified(src, remote, final, exp, options)
    status = "copied" if src.local_path(remote) is not None else "downloaded"
    res = _done(remote, final, status, got.digests, got.checks, exp, started)
    res.transferred, res.retries = got.digests.size - got.resumed, got.retries
    return res


def _samefile(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _hash(path: Path, exp: Expected, verb: str) -> Digests:
    size = path.stat().st_size
    with progress(f"{verb} {path.name}", total=size, unit="B") as advance:
        return hash_file(path, md5=exp.md5 is not None, advance=advance)


def _done(
    remote: Remote,
    final: Path,
    status: str,
    digests: Digests,
    checks: list[str],
    exp: Expected,
    started: float,
) -> FileResult:
    seconds = time.monotonic() - started
    res = FileResult(remote.name, final, remote.uri, status, digests.size, digests.sha256, checks)
    res.seconds = seconds
    if "same file" not in checks:  # the source itself needs no receipt
        write_receipt(
            final,
            {
                "source": remote.uri,
                "version": remote.version,
                "bytes": digests.size,
                "sha256": digests.sha256,
                "checks": checks,
                "verified_at": utc_now(),
            },
        )
    log.info(
        "%s: %s, %s bytes, verified: %s",
        remote.name,
        status,
        f"{digests.size:,}",
        ", ".join(checks) or "nothing (the source gave no size)",
    )
    if not exp.has_checksum and status != "skipped":
        why = "; ".join(exp.notes) or "the source gives no checksum"
        level = logging.INFO if status in ("copied", "linked") else logging.WARNING
        log.log(
            level,
            "%s: size checked, content not checksummed (%s); add a sha256 manifest "
            "(sha256: param or a SHA256SUMS file) to verify it",
            remote.name,
            why,
        )
    return res
