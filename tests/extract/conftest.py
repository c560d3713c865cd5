"""Real servers on loopback for the download tests.

- `http_server`: http.server in a thread, with Range/If-Range support and fault injection
  (cut the connection mid-body, ignore Range, answer 503, corrupt a byte, require a password).
- `s3`: a moto S3 server (ThreadedMotoServer, HTTP on 127.0.0.1) behind a thin WSGI layer that
  counts requests and can answer 503 SlowDown; fake credentials in the environment.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from deepcvr.extract import retry
from tests.servers import unavailable

FAKE_KEY_ID = "AKIAFAKEDEEPCVRTEST1"
FAKE_SECRET = "fake/Secret+Key/For-DeepCVR-Tests-0123456789"
LAST_MODIFIED = "Wed, 01 Jan 2025 00:00:00 GMT"


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "BACKOFF_BASE", 0.01)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- HTTP ---------------------------------------------------------------------------------------


@dataclass
class HttpFaults:
    cut_at: int = 0  # bytes of a response body sent before the connection is cut
    cuts: int = 0  # how many responses to cut
    ignore_range: bool = False  # answer every Range request with 200 and the whole file
    unavailable: int = 0  # answer this many GETs with 503
    corrupt: bool = False  # flip one byte in the middle of the file
    etag: bool = True  # send ETag / Last-Modified (versions for resume and receipts)
    auth: tuple[str, str] | None = None  # require HTTP basic auth
    # Faults other than `auth` hit the data files only, never SHA256SUMS.


@dataclass
class HttpServer:
    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    faults: HttpFaults = field(default_factory=HttpFaults)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    def count(self, method: str, name: str) -> int:
        return sum(1 for m, p, _ in self.requests if m == method and p == "/" + name)

    def ranges(self, name: str) -> list[str | None]:
        return [r for m, p, r in self.requests if m == "GET" and p == "/" + name]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so resumes reuse pooled connections
    state: HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _empty(self, code: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self, head: bool) -> None:
        st = self.state
        path = urlsplit(self.path).path
        st.requests.append((self.command, path, self.headers.get("Range")))
        f = st.faults if path != "/SHA256SUMS" else HttpFaults(auth=st.faults.auth)
        if f.auth:
            token = base64.b64encode(f"{f.auth[0]}:{f.auth[1]}".encode()).decode()
            if self.headers.get("Authorization") != f"Basic {token}":
                return self._empty(403 if self.headers.get("Authorization") else 401)
        if f.unavailable > 0 and not head:
            f.unavailable -= 1
            return self._empty(503, {"Retry-After": "0"})
        data = st.files.get(path.lstrip("/"))
        if data is None:
            return self._empty(404)
        if f.corrupt:
            mid = len(data) // 2
            data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]
        etag = f'"{hashlib.sha1(st.files[path.lstrip("/")]).hexdigest()[:16]}"'
        start, end, status = 0, len(data) - 1, 200
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if rng and not f.ignore_range and (if_range is None or if_range in (etag, LAST_MODIFIED)):
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng)
            assert m, rng
            start = int(m[1])
            end = min(int(m[2]), end) if m[2] else end
            if start >= len(data):
                return self._empty(416, {"Content-Range": f"bytes */{len(data)}"})
            status = 206
        body = data[start : end + 1]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/gzip")
        if not f.ignore_range:
            self.send_header("Accept-Ranges", "bytes")
        if f.etag:
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", LAST_MODIFIED)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if head:
            return None
        if f.cuts > 0 and len(body) > f.cut_at:
            f.cuts -= 1
            self.wfile.write(body[: f.cut_at])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # the client sees a short body
            return None
        self.wfile.write(body)
        return None


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    handler = type("Handler", (_Handler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    handler.state = HttpServer(url=f"http://{host}:{port}/")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler.state
    finally:
        server.shutdown()
        server.server_close()


# --- S3 (moto) ----------------------------------------------------------------------------------

SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class S3Faults:
    """WSGI layer in front of moto: records requests; object GETs can be answered with
    SlowDown, or cut after half their body (werkzeug then closes the connection)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[tuple[str, str, str | None]] = []
        self.slowdown = 0
        self.cuts = 0
        self.cut_after = 0  # object GETs served whole before the cuts start
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        is_object_get = method == "GET" and path.strip("/").count("/") >= 1
        with self.lock:
            self.requests.append((method, path, environ.get("HTTP_RANGE")))
            throttle = is_object_get and self.slowdown > 0
            cut = is_object_get and not throttle and self.cuts > 0 and self.cut_after == 0
            if is_object_get and not throttle and self.cut_after > 0:
                self.cut_after -= 1
            self.slowdown -= throttle
            self.cuts -= cut
        if throttle:
            start_response(
                "503 Slow Down",
                [("Content-Type", "application/xml"), ("Content-Length", str(len(SLOWDOWN)))],
            )
            return [SLOWDOWN]
        if cut:
            seen: list[Any] = []
            body = b"".join(self.app(environ, lambda *a: seen.append(a)))
            start_response(*seen[0])  # the full Content-Length, half the bytes
            return [body[: len(body) // 2]]
        return self.app(environ, start_response)

    def gets(self, bucket: str, key: str) -> int:
        return sum(1 for m, p, _ in self.requests if m == "GET" and p == f"/{bucket}/{key}")


def _start_moto() -> tuple[Any, S3Faults, str]:
    try:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from moto.server import ThreadedMotoServer
        from werkzeug.serving import make_server
    except ImportError as e:
        unavailable(f"moto server is not installed ({e})")

    class FaultyMotoServer(ThreadedMotoServer):
        faults: S3Faults | None = None

        def _server_entry(self) -> None:  # ThreadedMotoServer's, with our layer in front
            self.faults = S3Faults(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(
                self._ip_address, self._port, self.faults, True, request_handler=MotoRequestHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever()

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = FaultyMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    try:
        server.start()
        host, port = server.get_host_and_port()
    except Exception as e:
        unavailable(f"moto server cannot start: {e}")
    if server.faults is None:
        unavailable("moto server internals changed: cannot install the fault layer")
    return server, server.faults, f"http://{host}:{port}"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[tuple[S3Faults, str]]:
    server, faults, url = _start_moto()
    try:
        yield faults, url
    finally:
        server.stop()


def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, credentials: bool = True) -> None:
    """An isolated AWS environment: no profile files, no instance metadata lookups."""
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    if credentials:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)


@dataclass
class S3Env:
    url: str  # the endpoint
    bucket: str
    client: Any
    faults: S3Faults

    def put(self, key: str, data: bytes, part_size: int | None = None) -> str:
        """Upload; with `part_size`, as a multipart upload (ETag ends in -N)."""
        if part_size is None:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        else:
            from boto3.s3.transfer import TransferConfig

            cfg = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size)
            self.client.upload_fileobj(io.BytesIO(data), self.bucket, key, Config=cfg)
        return str(self.client.head_object(Bucket=self.bucket, Key=key)["ETag"])

    def gets(self, key: str) -> int:
        return self.faults.gets(self.bucket, key)


@pytest.fixture
def s3(moto_server: tuple[S3Faults, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> S3Env:
    import boto3

    faults, url = moto_server
    aws_env(monkeypatch, tmp_path)
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    bucket = f"deepcvr-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    faults.requests.clear()
    faults.slowdown = faults.cuts = faults.cut_after = 0
    return S3Env(url, bucket, client, faults)
