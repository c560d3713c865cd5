"""Local sources: `file://` URLs and plain paths (a directory or one file)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from deepcvr.errors import ConfigError, DataError
from deepcvr.extract.retry import RetryBudget
from deepcvr.extract.sources import (
    DEFAULT_FILES,
    Options,
    Remote,
    Source,
    check_name,
    is_glob,
    nothing_found,
    select,
)
from deepcvr.extract.verify import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    Advance,
    Sink,
    parse_sha256sums,
)

BLOCK = 8 * 1024 * 1024


def to_path(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.scheme.lower() == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"source {uri}: file:// URLs must name a local path (no host)")
        return Path(url2pathname(unquote(parts.path)))
    return Path(uri).expanduser()


class LocalSource(Source):
    def __init__(self, uri: str, options: Options) -> None:
        self.path = to_path(uri)
        self.shown = str(self.path)
        self.options = options

    def remotes(self, files: list[str] | None, keys: list[str] | None) -> list[Remote]:
        if keys:
            raise ConfigError(f"source {self.shown}: keys: is for s3:// sources; use files:")
        if self.path.is_file():
            if files:
                raise ConfigError(f"source {self.shown} is a file: files: needs a directory source")
            return [self._remote(self.path, self.path.name)]
        if not self.path.is_dir():
            raise DataError(
                f"source {self.shown}: no such file or directory; point source at the "
                "archives (e.g. --set source=s3://BUCKET/PREFIX/ or a directory)"
            )
        top = self._listing(recursive=False)
        if files is None:
            if not any(n in top for n in DEFAULT_FILES):
                raise DataError(nothing_found(self.shown, top))
            names = select(top, None, self.shown)
        elif any(is_glob(f) for f in files):
            names = select(self._listing(recursive=True), files, self.shown)
        else:
            present = [f for f in files if (self.path / check_name(f, "files")).is_file()]
            names = select(present + top, files, self.shown)
        return [self._remote(self.path / n, n) for n in names]

    def _listing(self, recursive: bool) -> list[str]:
        """Files under the directory; hidden ones (partials, receipts) are never data."""
        out = []
        for dirpath, dirnames, filenames in os.walk(self.path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
            rel = Path(dirpath).relative_to(self.path)
            out += [(rel / f).as_posix() for f in filenames if not f.startswith(".")]
        return out

    def _remote(self, path: Path, name: str) -> Remote:
        try:
            st = path.stat()
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
        return Remote(
            name=check_name(name, str(path)),
            uri=str(path),
            size=st.st_size,
            version=f"{st.st_size}:{st.st_mtime_ns}",
            handle=path,
        )

    def manifest(self) -> tuple[dict[str, str], str | None]:
        where = (self.path.parent if self.path.is_file() else self.path) / MANIFEST_NAME
        if not where.is_file():
            return {}, None
        try:
            with where.open("rb") as f:
                text = f.read(MAX_MANIFEST_BYTES).decode("utf-8", "replace")
        except OSError as e:
            raise DataError(f"{where}: cannot read ({e.strerror or e})") from None
        return parse_sha256sums(text, str(where)), str(where)

    def fetch(self, remote: Remote, sink: Sink, budget: RetryBudget, advance: Advance) -> None:
        path: Path = remote.handle
        try:
            with path.open("rb") as f:
                f.seek(sink.size)
                while block := f.read(BLOCK):
                    sink.write(block)
                    advance(len(block))
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror or e})") from None

    def local_path(self, remote: Remote) -> Path | None:
        return Path(remote.handle)
