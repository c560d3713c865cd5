"""HTTP(S) sources via httpx: a directory URL (ending in `/`) plus file names, or one file URL.

Interrupted transfers resume with `Range: bytes=N-` (and `If-Range`, so a file changed on the
server is fetched whole again). A server that ignores Range answers 200 with the whole body:
that response is used from byte 0 (it costs nothing extra), but if that transfer is cut too
the file cannot be resumed and the download fails with a one-line error.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urljoin, urlsplit

import httpx

from deepcvr import __version__
from deepcvr.errors import ConfigError, DataError
from deepcvr.extract.retry import Retryable, RetryBudget, parse_retry_after
from deepcvr.extract.sources import (
    DEFAULT_FILES,
    Options,
    Remote,
    Source,
    check_name,
    is_glob,
    shown_url,
)
from deepcvr.extract.verify import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    Advance,
    Sink,
    parse_sha256sums,
)
from deepcvr.secrets import register_secret

log = logging.getLogger("deepcvr")

TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class HttpSource(Source):
    def __init__(self, uri: str, options: Options) -> None:
        parts = urlsplit(uri)
        if not parts.hostname:
            raise ConfigError(f"source {shown_url(uri)}: no host in the URL")
        if parts.password:
            register_secret(parts.password)
        self.url = uri
        self.shown = shown_url(uri)
        self.options = options
        self.is_dir = parts.path.endswith("/") or not parts.path
        self.client = httpx.Client(
            timeout=httpx.Timeout(options.timeout),
            follow_redirects=True,
            # identity: a compressed transfer would change the bytes and sizes we verify
            headers={"Accept-Encoding": "identity", "User-Agent": f"deepcvr/{__version__}"},
        )

    def close(self) -> None:
        self.client.close()

    def remotes(self, files: list[str] | None, keys: list[str] | None) -> list[Remote]:
        if keys:
            raise ConfigError(f"source {self.shown}: keys: is for s3:// sources; use files:")
        if not self.is_dir:
            if files:
                raise ConfigError(f"source {self.shown} is a file URL: end it with / to use files:")
            name = check_name(urlsplit(self.url).path.rsplit("/", 1)[-1], self.shown)
            remote = self._probe(self.url, name)
            if remote is None:
                raise DataError(f"{self.shown}: not found (HTTP 404)")
            return [remote]
        for f in files or ():
            if is_glob(f):
                raise ConfigError(
                    f"files: {f!r}: an HTTP directory cannot be listed; name the files"
                )
        names = [check_name(f, "files") for f in files] if files else list(DEFAULT_FILES)
        found = []
        for name in names:
            remote = self._probe(urljoin(self.url, name), name)
            if remote is None and files:
                raise DataError(f"{shown_url(urljoin(self.url, name))}: not found (HTTP 404)")
            if remote is not None:
                found.append(remote)
        if not found:
            raise DataError(
                f"{self.shown}: no Ali-CCP archive ({' or '.join(DEFAULT_FILES)}): HTTP 404 "
                "for each; pass files: [...] to choose others"
            )
        return found

    def _probe(self, url: str, name: str) -> Remote | None:
        """HEAD the file: size and version; None if it does not exist."""
        shown = shown_url(url)
        budget = RetryBudget(shown, self.options.max_retry_seconds)
        attempt = 0
        while True:
            try:
                r = self.client.head(url)
                if r.status_code in (405, 501):  # no HEAD: read the headers of a GET
                    with self.client.stream("GET", url) as r:
                        pass
                if r.status_code in (404, 410):
                    return None
                check_status(r, shown)
                break
            except Retryable as e:
                attempt += 1
                budget.pause(attempt, e)
            except httpx.TransportError as e:
                attempt += 1
                budget.pause(attempt, transport_error(e, shown))
        size = r.headers.get("content-length")
        return Remote(
            name=name,
            uri=shown,
            size=int(size) if size and size.isdigit() else None,
            version=version_of(r),
            handle=url,
            notes=("HTTP gives no checksum of the content",),
        )

    def manifest(self) -> tuple[dict[str, str], str | None]:
        if urlsplit(self.url).query:  # a signed URL: its directory is not ours to probe
            return {}, None
        url = urljoin(self.url, MANIFEST_NAME)
        shown = shown_url(url)
        budget = RetryBudget(shown, self.options.max_retry_seconds)
        attempt = 0
        while True:
            try:
                r = self.client.get(url)
                if 400 <= r.status_code < 500 and r.status_code not in TRANSIENT_STATUS:
                    log.debug("%s: no manifest (HTTP %d)", shown, r.status_code)
                    return {}, None
                check_status(r, shown)
                break
            except Retryable as e:
                attempt += 1
                budget.pause(attempt, e)
            except httpx.TransportError as e:
                attempt += 1
                budget.pause(attempt, transport_error(e, shown))
        text = r.content[:MAX_MANIFEST_BYTES].decode("utf-8", "replace")
        return parse_sha256sums(text, shown), shown

    def fetch(self, remote: Remote, sink: Sink, budget: RetryBudget, advance: Advance) -> None:
        ignores_range = False
        attempt = 0
        while True:
            start = sink.size
            if start and start == remote.size:
                return  # a resumed partial that was already complete
            headers = {}
            if start:
                headers["Range"] = f"bytes={start}-"
                if remote.version:  # a changed file must come whole, not spliced
                    headers["If-Range"] = remote.version
            got = 0
            try:
                with self.client.stream("GET", remote.handle, headers=headers) as r:
                    if r.status_code == 416 and start:  # partial longer than the file
                        log.warning(
                            "%s: partial file does not fit the source; restarting", remote.uri
                        )
                        sink.restart()
                        advance(-start)
                        continue
                    check_status(r, remote.uri)
                    if start and r.status_code == 200:
                        if version_of(r) != remote.version:
                            raise DataError(
                                f"{remote.uri}: the file changed on the server during the "
                                "download; run again"
                            )
                        ignores_range = True
                        log.warning(
                            "%s: the server ignores Range (200, not 206): restarting from "
                            "byte 0 with this response",
                            remote.uri,
                        )
                        sink.restart()
                        advance(-start)
                    elif start:
                        check_content_range(r, start, remote)
                    for chunk in r.iter_raw():  # as received: a cut loses no buffered bytes
                        sink.write(chunk)
                        advance(len(chunk))
                        got += len(chunk)
                        budget.progressed()
                if remote.size is not None and sink.size < remote.size:
                    raise Retryable(f"transfer ended at {sink.size:,} of {remote.size:,} bytes")
                return
            except (Retryable, httpx.TransportError) as e:
                err = e if isinstance(e, Retryable) else transport_error(e, remote.uri)
                if ignores_range and sink.size:
                    sink.close(discard=True)  # useless: it can only grow from byte 0 again
                    raise DataError(
                        f"{remote.uri}: transfer cut at {sink.size:,} bytes ({err.reason}) and "
                        "the server ignores Range requests, so it cannot be resumed; "
                        "try again later or use a source that supports Range"
                    ) from None
                attempt = 1 if got else attempt + 1
                budget.pause(attempt, err)


def check_status(r: httpx.Response, shown: str) -> None:
    """Raise Retryable for transient statuses, a one-line DataError for the others."""
    code = r.status_code
    if code < 300:
        return
    if code in TRANSIENT_STATUS:
        raise Retryable(f"HTTP {code}", parse_retry_after(r.headers.get("retry-after")))
    if code in (401, 403):
        raise DataError(
            f"{shown}: access denied (HTTP {code}); check the credentials or the URL signature"
        )
    if code in (404, 410):
        raise DataError(f"{shown}: not found (HTTP {code})")
    raise DataError(f"{shown}: unexpected HTTP {code} {r.reason_phrase}")


def check_content_range(r: httpx.Response, start: int, remote: Remote) -> None:
    m = _CONTENT_RANGE.fullmatch(r.headers.get("content-range", "").strip())
    total = int(m[3]) if m and m[3] != "*" else None
    if m is None or int(m[1]) != start or (remote.size is not None and total != remote.size):
        raise DataError(
            f"{remote.uri}: bad Content-Range {r.headers.get('content-range')!r} for a "
            f"request from byte {start:,}; the file may have changed, run again"
        )


def version_of(r: httpx.Response) -> str | None:
    """A validator usable in If-Range: a strong ETag, else Last-Modified."""
    etag = r.headers.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return r.headers.get("last-modified")


def transport_error(e: httpx.TransportError, shown: str) -> Retryable:
    if isinstance(e, httpx.UnsupportedProtocol | httpx.ProxyError):
        raise DataError(f"{shown}: {' '.join(str(e).split())}") from None
    reason = " ".join(str(e).split()) or type(e).__name__
    return Retryable(f"{type(e).__name__}: {reason}")
