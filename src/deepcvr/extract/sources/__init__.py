"""Where archives come from: S3 (and S3-compatible stores), HTTP(S), and local paths.

A source resolves which files to fetch into `Remote`s (size, version, source checksums), reads
an optional SHA256SUMS manifest, and appends a file's bytes to a `Sink` from its current size,
which is how interrupted downloads resume. Verification and placement are the caller's job.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from deepcvr import aliccp
from deepcvr.errors import ConfigError, DataError
from deepcvr.extract.retry import RetryBudget
from deepcvr.extract.verify import MANIFEST_NAME, Advance, Sink
from deepcvr.secrets import mask_url

DEFAULT_FILES = tuple(aliccp.archive_name(s) for s in aliccp.SPLITS)
GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Options:
    endpoint_url: str | None = None
    region: str | None = None
    anonymous: bool = False
    part_size: int = 8 * 1024 * 1024
    concurrency: int = 8
    link: bool = True
    timeout: float = 60.0
    max_retry_seconds: float = 300.0


@dataclass(frozen=True)
class Remote:
    """One file at the source."""

    name: str  # relative local path (POSIX), e.g. sample_train.tar.gz
    uri: str  # shown form: no password, no query string
    size: int | None
    version: str | None  # ETag, Last-Modified, or size:mtime; None if the source has none
    handle: Any  # source-specific: the key, URL or path
    md5: str | None = None  # expected MD5 the source vouches for (single-part S3 ETag)
    md5_from: str = ""
    sha256: str | None = None  # expected SHA-256 the source vouches for (S3 ChecksumSHA256)
    notes: tuple[str, ...] = field(default=())  # why the source offers no content checksum


class Source:
    """Base: subclasses implement `remotes`, `manifest` and `fetch`."""

    shown: str  # the source URI, safe to print

    def remotes(self, files: list[str] | None, keys: list[str] | None) -> list[Remote]:
        raise NotImplementedError

    def manifest(self) -> tuple[dict[str, str], str | None]:
        """({name: sha256}, where it was read) from a SHA256SUMS at the source, or ({}, None)."""
        return {}, None

    def fetch(self, remote: Remote, sink: Sink, budget: RetryBudget, advance: Advance) -> None:
        """Append the bytes of `remote` from `sink.size` to the end (may restart the sink)."""
        raise NotImplementedError

    def local_path(self, remote: Remote) -> Path | None:
        """The file itself when the source is on this machine (for links and in-place checks)."""
        return None

    def close(self) -> None:
        return None


def shown_url(url: str) -> str:
    """A URL safe to print and store: password masked, query string (signatures) hidden."""
    parts = urlsplit(url)
    return mask_url(urlunsplit(parts._replace(query="***" if parts.query else "", fragment="")))


def is_glob(pattern: str) -> bool:
    return bool(GLOB_CHARS & set(pattern))


def check_name(name: str, where: str) -> str:
    """A relative name must stay inside the output directory."""
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name:
        raise ConfigError(f"{where}: unsafe file name {name!r}; use a plain relative name")
    return str(p)


def select(
    available: list[str], files: list[str] | None, where: str, manifest_name: str = MANIFEST_NAME
) -> list[str]:
    """Names chosen among `available` (relative names at the source).

    Default: the Ali-CCP archives that are present. A literal name must exist; a glob must
    match something. Empty or no match: one-line DataError naming the source.
    """
    present = set(available)
    if files is None:
        chosen = [n for n in DEFAULT_FILES if n in present]
        if not chosen:
            raise DataError(nothing_found(where, available))
        return chosen
    chosen = []
    for pattern in files:
        if is_glob(pattern):
            hits = [n for n in sorted(available) if fnmatch.fnmatchcase(n, pattern)]
            hits = [n for n in hits if n != manifest_name]  # the manifest verifies, it is no data
            if not hits:
                raise DataError(f"{where}: nothing matches {pattern!r}{_found(available)}")
        elif pattern in present:
            hits = [pattern]
        else:
            raise DataError(f"{where}: {pattern} not found{_found(available)}")
        chosen += [n for n in hits if n not in chosen]
    return chosen


def nothing_found(where: str, available: list[str]) -> str:
    if not available:
        return f"{where}: nothing there (empty or missing); check the source"
    names = " or ".join(DEFAULT_FILES)
    return (
        f"{where}: no Ali-CCP archive ({names}){_found(available)}; "
        "pass files: [...] to choose others"
    )


def _found(available: list[str]) -> str:
    if not available:
        return " (the source is empty)"
    shown = ", ".join(sorted(available)[:5])
    more = f", ... ({len(available)} in all)" if len(available) > 5 else ""
    return f" (found: {shown}{more})"


def open_source(uri: str, options: Options) -> Source:
    """The source for `uri`: s3://, http(s)://, file:// or a plain path."""
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "s3":
        from deepcvr.extract.sources.s3 import S3Source

        return S3Source(uri, options)
    if scheme in ("http", "https"):
        from deepcvr.extract.sources.http import HttpSource

        return HttpSource(uri, options)
    if scheme in ("file", "") or len(scheme) == 1:  # len 1: a Windows drive letter
        from deepcvr.extract.sources.local import LocalSource

        return LocalSource(uri, options)
    raise ConfigError(
        f"source {shown_url(uri)}: unsupported scheme {scheme!r}; "
        "use s3://, https://, http://, file:// or a path"
    )
