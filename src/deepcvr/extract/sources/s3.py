"""S3 and S3-compatible sources (MinIO, Ceph) via boto3 and the standard credential chain.

Objects are fetched with concurrent ranged GETs, each pinned to the object's ETag (If-Match),
and written in order, so the checksums are computed in one streaming pass while at most
`concurrency + 2` parts are held in memory. botocore's own retries are off: one retry policy
(retry.py) with one time bound covers every request.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import PurePosixPath
from typing import Any, TypeVar
from urllib.parse import urlsplit

from deepcvr.errors import ConfigError, DataError
from deepcvr.extract.retry import Retryable, RetryBudget
from deepcvr.extract.sources import Options, Remote, Source, check_name, is_glob, select
from deepcvr.extract.sources.s3client import Denied, NotFound, make_client, s3_error
from deepcvr.extract.verify import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    Advance,
    Sink,
    parse_sha256sums,
)

log = logging.getLogger("deepcvr")

T = TypeVar("T")
_MD5_ETAG = re.compile(r'"?([0-9a-fA-F]{32})"?')


class S3Source(Source):
    def __init__(self, uri: str, options: Options) -> None:
        parts = urlsplit(uri)
        self.bucket, self.prefix = parts.netloc, parts.path.lstrip("/")
        if not self.bucket:
            raise ConfigError(f"source {uri}: no bucket; use s3://BUCKET/PREFIX/")
        self.shown = f"s3://{self.bucket}/{self.prefix}"
        self.options = options
        self.client = make_client(options, self.shown)
        self._listed: set[str] | None = None  # relative names seen by a listing

    def _uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def remotes(self, files: list[str] | None, keys: list[str] | None) -> list[Remote]:
        if keys:
            if files:
                raise ConfigError("download: give files: or keys:, not both")
            names = [check_name(PurePosixPath(k).name, f"keys: {k}") for k in keys]
            if len(set(names)) < len(names):
                raise ConfigError("keys: two keys have the same base name; fetch them apart")
            return [self._head(k, n) for k, n in zip(keys, names, strict=True)]
        if self.prefix and not self.prefix.endswith("/"):
            single = self._head(self.prefix, PurePosixPath(self.prefix).name, missing_ok=True)
            if single is not None:  # s3://bucket/path/file.tar.gz: exactly that object
                if files:
                    raise ConfigError(f"source {self.shown} is an object: files: needs a prefix")
                return [single]
            self.prefix += "/"
            self.shown += "/"
        if files and not any(is_glob(f) for f in files):  # no listing needed (nor its permission)
            return [self._head(self.prefix + check_name(f, "files"), f) for f in files]
        listing = self._list()
        self._listed = set(listing)
        names = select(list(listing), files, self.shown)
        return [self._head(self.prefix + n, n) for n in names]

    def _list(self) -> dict[str, int]:
        out: dict[str, int] = {}
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix}
            if token:
                kw["ContinuationToken"] = token
            page = self._call(lambda kw=kw: self.client.list_objects_v2(**kw), self.shown)
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(self.prefix) :]
                if rel and not rel.endswith("/"):  # skip "folder" marker objects
                    out[rel] = obj["Size"]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return out

    def _head(self, key: str, name: str, missing_ok: bool = False) -> Remote | None:
        uri = self._uri(key)

        def head() -> dict[str, Any]:
            return self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")

        try:
            r = self._call(head, uri)
        except (NotFound, Denied) as e:
            if missing_ok:
                return None
            if isinstance(e, NotFound):
                self._check_bucket()
            raise
        etag = str(r.get("ETag", ""))
        m = _MD5_ETAG.fullmatch(etag)
        md5 = m[1].lower() if m else None
        notes = []
        if md5 is None:
            notes.append(f"multipart ETag {etag} is not an MD5 of the content")
        elif r.get("ServerSideEncryption", "").startswith("aws:kms") or r.get(
            "SSECustomerAlgorithm"
        ):
            md5 = None
            notes.append("the ETag of an SSE-KMS or SSE-C object is not an MD5 of the content")
        return Remote(
            name=check_name(name, uri),
            uri=uri,
            size=int(r["ContentLength"]),
            version=etag or None,
            handle=key,
            md5=md5,
            md5_from="S3 ETag",
            sha256=_full_sha256(r),
            notes=tuple(notes),
        )

    def _check_bucket(self) -> None:
        """A 404 on HEAD does not say whether the key or the bucket is missing: ask."""
        try:
            self._call(lambda: self.client.head_bucket(Bucket=self.bucket), self.shown)
        except NotFound:
            raise DataError(f"s3://{self.bucket}: no such bucket (404)") from None

    def manifest(self) -> tuple[dict[str, str], str | None]:
        # After remotes(), the prefix is "", a "directory/" or the key of a single object.
        base = self.prefix.rpartition("/")[0] + "/" if "/" in self.prefix else ""
        if self._listed is not None and MANIFEST_NAME not in self._listed:
            return {}, None
        key, uri = base + MANIFEST_NAME, self._uri(base + MANIFEST_NAME)

        def get() -> bytes:
            r = self.client.get_object(Bucket=self.bucket, Key=key)
            return bytes(r["Body"].read(MAX_MANIFEST_BYTES))

        try:
            data = self._call(get, uri)
        except (NotFound, Denied) as e:  # no manifest (403: missing, without ListBucket)
            log.debug("%s: no manifest (%s)", uri, e)
            return {}, None
        return parse_sha256sums(data.decode("utf-8", "replace"), uri), uri

    def fetch(self, remote: Remote, sink: Sink, budget: RetryBudget, advance: Advance) -> None:
        assert remote.size is not None
        step = self.options.part_size
        ranges = [(a, min(a + step, remote.size) - 1) for a in range(sink.size, remote.size, step)]
        if len(ranges) <= 1 or self.options.concurrency == 1:
            for rng in ranges:
                self._write(self._get_range(remote, rng, budget), sink, budget, advance)
            return
        workers = min(self.options.concurrency, len(ranges))
        todo = iter(ranges)
        window: deque[Future[bytes]] = deque()
        with ThreadPoolExecutor(workers, thread_name_prefix="deepcvr-s3") as pool:
            try:
                for rng in islice(todo, workers + 2):  # bounded read-ahead: bounded memory
                    window.append(pool.submit(self._get_range, remote, rng, budget))
                while window:
                    data = window.popleft().result()
                    self._write(data, sink, budget, advance)
                    if (rng := next(todo, None)) is not None:
                        window.append(pool.submit(self._get_range, remote, rng, budget))
            except BaseException:
                budget.abort()  # wake workers sleeping in a backoff
                for fut in window:
                    fut.cancel()
                raise

    @staticmethod
    def _write(data: bytes, sink: Sink, budget: RetryBudget, advance: Advance) -> None:
        sink.write(data)
        advance(len(data))
        budget.progressed()

    def _get_range(self, remote: Remote, rng: tuple[int, int], budget: RetryBudget) -> bytes:
        a, b = rng
        attempt = 0
        while True:
            budget.check()
            try:
                kw: dict[str, Any] = {"Bucket": self.bucket, "Key": remote.handle}
                kw["Range"] = f"bytes={a}-{b}"
                if remote.version:  # an object replaced mid-download fails, never splices
                    kw["IfMatch"] = remote.version
                data = self.client.get_object(**kw)["Body"].read()
                if len(data) != b - a + 1:
                    raise Retryable(f"short read at byte {a:,}: {len(data):,} of {b - a + 1:,}")
                return bytes(data)
            except Retryable as e:
                err = e
            except Exception as e:
                err = s3_error(e, remote.uri, self.bucket)
            attempt += 1
            budget.pause(attempt, err)

    def _call(self, fn: Callable[[], T], what: str) -> T:
        budget = RetryBudget(what, self.options.max_retry_seconds)
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as e:
                err = s3_error(e, what, self.bucket)
            attempt += 1
            budget.pause(attempt, err)


def _full_sha256(head: dict[str, Any]) -> str | None:
    """The object's own SHA-256 when S3 stores one for the whole object (not per part)."""
    value = head.get("ChecksumSHA256")
    if not value or "-" in value or head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return None
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return None
