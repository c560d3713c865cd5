"""extract.download over HTTP: a real server on loopback with Range support and injected faults."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepcvr.cli import app
from deepcvr.errors import ConfigError, DataError
from deepcvr.extract.download import download
from deepcvr.extract.retry import GaveUp
from deepcvr.extract.sources import Options
from tests.extract.conftest import HttpServer, sha256

TRAIN, TEST = "sample_train.tar.gz", "sample_test.tar.gz"
SIZE = 3 * 1024 * 1024 + 77  # more than one 1 MiB read, so a cut lands mid-transfer


def opts(**kw) -> Options:
    return Options(max_retry_seconds=kw.pop("max_retry_seconds", 5), **kw)


def visible(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) if d.exists() else []


def partials(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith(".tmp-")) if d.exists() else []


@pytest.fixture
def served(http_server: HttpServer) -> tuple[HttpServer, bytes]:
    data = os.urandom(SIZE)
    http_server.files[TRAIN] = data
    http_server.files["SHA256SUMS"] = f"{sha256(data)}  {TRAIN}\n".encode()
    return http_server, data


def test_dropped_connection_resumes_with_range(served, tmp_path, caplog):
    srv, data = served
    srv.faults.cut_at, srv.faults.cuts = 1_000_000, 1
    out = tmp_path / "ext"
    with caplog.at_level(logging.INFO, logger="deepcvr"):
        res = download(srv.url, out, options=opts())
    assert (out / TRAIN).read_bytes() == data
    assert srv.ranges(TRAIN) == [None, "bytes=1000000-"]  # the second GET continued the partial
    f = res.summary()["files"][TRAIN]
    assert f["checks"] == ["size", "sha256 (SHA256SUMS)"] and f["sha256"] == sha256(data)
    assert f["transferred"] == SIZE and f["retries"] == 1
    assert "RemoteProtocolError" in caplog.text
    assert visible(out) == [TRAIN] and partials(out) == []


def test_server_ignoring_range_restarts_from_zero(served, tmp_path, caplog):
    srv, data = served
    srv.faults.cut_at, srv.faults.cuts, srv.faults.ignore_range = 500_000, 1, True
    with caplog.at_level(logging.WARNING, logger="deepcvr"):
        download(srv.url, tmp_path / "o", options=opts())
    assert (tmp_path / "o" / TRAIN).read_bytes() == data
    assert srv.count("GET", TRAIN) == 2
    assert "ignores Range (200, not 206): restarting from byte 0" in caplog.text


def test_server_ignoring_range_cannot_resume_a_second_cut(served, tmp_path):
    srv, _ = served
    srv.faults.cut_at, srv.faults.cuts, srv.faults.ignore_range = 500_000, 5, True
    out = tmp_path / "o"
    with pytest.raises(DataError, match=r"transfer cut at 500,000 bytes .* ignores Range"):
        download(srv.url, out, options=opts())
    assert visible(out) == [] and partials(out) == []


def test_503_is_retried_then_succeeds(served, tmp_path):
    srv, data = served
    srv.faults.unavailable = 3
    res = download(srv.url, tmp_path / "o", options=opts())
    assert (tmp_path / "o" / TRAIN).read_bytes() == data
    assert res.files[0].retries >= 2  # 503s spread over the manifest and the file


def test_503_for_too_long_gives_up(served, tmp_path):
    srv, _ = served
    srv.files.pop("SHA256SUMS")
    srv.faults.unavailable = 10_000
    with pytest.raises(GaveUp, match=r"sample_train.tar.gz: HTTP 503; giving up after \d+ failed"):
        download(srv.url, tmp_path / "o", options=opts(max_retry_seconds=0.3))
    assert visible(tmp_path / "o") == [] and partials(tmp_path / "o") == []


def test_corrupted_bytes_are_detected(served, tmp_path):
    srv, _ = served
    srv.faults.corrupt = True
    out = tmp_path / "o"
    with pytest.raises(DataError, match=r"sample_train.tar.gz: checksum mismatch: sha256"):
        download(srv.url, out, options=opts())
    assert visible(out) == [] and partials(out) == []


def test_second_run_skips_without_get(served, tmp_path):
    srv, data = served
    out = tmp_path / "o"
    download(srv.url, out, options=opts())
    assert (out / TRAIN).read_bytes() == data
    srv.requests.clear()
    res = download(srv.url, out, options=opts())
    assert srv.count("GET", TRAIN) == 0 and srv.count("HEAD", TRAIN) == 1
    assert res.summary()["skipped"] == 1 and res.summary()["bytes"] == 0
    # Without a manifest, the receipt of the verified download vouches for the file.
    srv.files.pop("SHA256SUMS")
    srv.requests.clear()
    res = download(srv.url, out, options=opts())
    assert srv.count("GET", TRAIN) == 0
    assert res.files[0].checks == ["size", "sha256 (receipt of the verified download)"]
    # A server without versions (no ETag, no Last-Modified): nothing to trust, fetch again.
    srv.faults.etag = False
    res = download(srv.url, out, options=opts())
    assert srv.count("GET", TRAIN) == 1 and res.files[0].status == "downloaded"


def test_partial_from_an_earlier_run_is_resumed(served, tmp_path):
    srv, data = served
    srv.faults.cut_at, srv.faults.cuts = 1_500_000, 1000  # every response is cut
    out = tmp_path / "o"
    with pytest.raises(GaveUp):
        download(srv.url, out, options=opts(max_retry_seconds=0))
    assert visible(out) == []
    assert partials(out) == [f".tmp-{TRAIN}.part", f".tmp-{TRAIN}.part.json"]  # kept, hidden
    srv.faults.cuts = 0
    srv.requests.clear()
    res = download(srv.url, out, options=opts())
    assert srv.ranges(TRAIN) == ["bytes=1500000-"]
    assert (out / TRAIN).read_bytes() == data and partials(out) == []
    assert res.files[0].transferred == SIZE - 1_500_000


def test_password_in_url_is_used_and_never_shown(served, tmp_path, caplog):
    srv, data = served
    srv.faults.auth = ("reader", "s3cr3t-pw")
    url = srv.url.replace("http://", "http://reader:s3cr3t-pw@")
    with caplog.at_level(logging.DEBUG, logger="deepcvr"):
        res = download(url, tmp_path / "o", options=opts())
    assert (tmp_path / "o" / TRAIN).read_bytes() == data
    assert "s3cr3t-pw" not in caplog.text + json.dumps(res.summary())
    bad = url.replace("s3cr3t-pw", "wrong-pw")
    with pytest.raises(DataError, match=r"access denied \(HTTP 403\)") as info:
        download(bad, tmp_path / "p", options=opts())
    assert "wrong-pw" not in str(info.value) and "reader:***@" in str(info.value)
    with pytest.raises(DataError, match=r"access denied \(HTTP 401\)"):
        download(srv.url, tmp_path / "p", options=opts())


def test_single_file_url_and_named_files(served, tmp_path):
    srv, _ = served
    srv.files[TEST] = b"test split"
    res = download(srv.url + TRAIN, tmp_path / "one", options=opts())
    assert [f.name for f in res.files] == [TRAIN]
    res = download(srv.url, tmp_path / "named", files=[TEST], options=opts())
    assert (tmp_path / "named" / TEST).read_bytes() == b"test split"
    res = download(srv.url, tmp_path / "both", options=opts())
    assert sorted(f.name for f in res.files) == [TEST, TRAIN]


def test_bad_http_inputs(http_server, tmp_path):
    with pytest.raises(DataError, match=r"no Ali-CCP archive"):
        download(http_server.url, tmp_path / "o", options=opts())
    with pytest.raises(DataError, match=rf"^{http_server.url}missing.bin: not found \(HTTP 404\)"):
        download(http_server.url + "missing.bin", tmp_path / "o", options=opts())
    with pytest.raises(DataError, match=r"x.tar.gz: not found"):
        download(http_server.url, tmp_path / "o", files=["x.tar.gz"], options=opts())
    with pytest.raises(ConfigError, match=r"cannot be listed"):
        download(http_server.url, tmp_path / "o", files=["*.gz"], options=opts())
    assert visible(tmp_path / "o") == []


def test_signed_url_query_is_never_shown(served, tmp_path):
    srv, _ = served
    res = download(f"{srv.url}{TRAIN}?X-Amz-Signature=topsecretsig", tmp_path / "o", options=opts())
    assert "topsecretsig" not in json.dumps(res.summary())
    assert res.files[0].uri == f"{srv.url}{TRAIN}?***"


def test_cli_download_connection_refused_one_line(tmp_path):
    result = CliRunner().invoke(
        app,
        ["-q", "download", "http://127.0.0.1:9/d/", str(tmp_path / "o"),
         "--workspace", str(tmp_path), "--max-retry-seconds", "0"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.startswith("error: http://127.0.0.1:9/d/")
    assert "ConnectError" in result.stderr and result.stderr.count("\n") == 1
