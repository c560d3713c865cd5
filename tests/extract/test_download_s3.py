"""extract.download from S3: a real S3 API (moto server on loopback) driven by boto3 over HTTP."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepcvr.cli import app
from deepcvr.errors import ConfigError, DataError
from deepcvr.extract import verify
from deepcvr.extract.download import download
from deepcvr.extract.retry import GaveUp
from deepcvr.extract.sources import Options
from deepcvr.extract.sources import s3 as s3mod
from deepcvr.metadata import MetadataStore
from tests.extract.conftest import FAKE_KEY_ID, FAKE_SECRET, S3Env, aws_env, sha256

TRAIN, TEST = "sample_train.tar.gz", "sample_test.tar.gz"
MiB = 1024 * 1024


def blob(n: int, seed: int = 0) -> bytes:
    return (seed.to_bytes(4, "big") + os.urandom(12)) * (n // 16) + os.urandom(n % 16)


def opts(s3: S3Env, **kw) -> Options:
    return Options(endpoint_url=s3.url, max_retry_seconds=kw.pop("max_retry_seconds", 5), **kw)


def visible(d: Path) -> list[str]:
    """What a reader of the directory sees: no hidden partials, receipts or temp files."""
    return sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) if d.exists() else []


def hidden_partials(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith(".tmp-")) if d.exists() else []


def test_default_archives_under_prefix(s3, tmp_path, caplog):
    train, test = blob(300_000), blob(200_000, 1)
    s3.put(f"prod/{TRAIN}", train)
    s3.put(f"prod/{TEST}", test)
    s3.put("prod/README.md", b"not an archive")
    out = tmp_path / "external"
    with caplog.at_level(logging.INFO, logger="deepcvr"):
        res = download(f"s3://{s3.bucket}/prod/", out, options=opts(s3))
    assert (out / TRAIN).read_bytes() == train and (out / TEST).read_bytes() == test
    assert visible(out) == [TEST, TRAIN]  # README.md is not an Ali-CCP archive
    summary = res.summary()
    assert summary["downloaded"] == 2 and summary["skipped"] == 0
    assert summary["bytes"] == len(train) + len(test)
    f = summary["files"][TRAIN]
    assert f["sha256"] == sha256(train) and f["checks"] == ["size", "md5 (S3 ETag)"]
    assert f["source"] == f"s3://{s3.bucket}/prod/{TRAIN}"
    assert FAKE_SECRET not in caplog.text


def test_multipart_object_concurrent_ranges(s3, tmp_path, caplog):
    data = blob(11 * MiB + 12345)
    etag = s3.put(f"p/{TRAIN}", data, part_size=5 * MiB)
    assert etag.strip('"').endswith("-3")  # really multipart
    out = tmp_path / "ext"
    with caplog.at_level(logging.INFO, logger="deepcvr"):
        res = download(
            f"s3://{s3.bucket}/p/", out, options=opts(s3, part_size=1 * MiB, concurrency=4)
        )
    assert (out / TRAIN).read_bytes() == data
    ranges = [r for m, p, r in s3.faults.requests if m == "GET" and p.endswith(TRAIN)]
    assert len(ranges) == 12 and all(r and r.startswith("bytes=") for r in ranges)
    f = res.summary()["files"][TRAIN]
    assert f["checks"] == ["size"] and f["sha256"] == sha256(data)
    assert "multipart ETag" in caplog.text and "content not checksummed" in caplog.text

    # With a manifest the multipart object is content-verified too.
    res = download(
        f"s3://{s3.bucket}/p/", out, sha256={TRAIN: sha256(data)}, force=True, options=opts(s3)
    )
    assert res.summary()["files"][TRAIN]["checks"] == ["size", "sha256 (sha256 param)"]


def test_sha256sums_at_the_prefix(s3, tmp_path):
    data = blob(50_000)
    s3.put(f"d/{TRAIN}", data, part_size=None)
    s3.put("d/SHA256SUMS", f"{sha256(data)}  {TRAIN}\n{'0' * 64} *other.bin\n".encode())
    res = download(f"s3://{s3.bucket}/d/", tmp_path / "o", options=opts(s3))
    assert res.summary()["files"][TRAIN]["checks"] == [
        "size",
        "md5 (S3 ETag)",
        "sha256 (SHA256SUMS)",
    ]


def test_checksum_mismatch_leaves_nothing(s3, tmp_path):
    s3.put(f"d/{TRAIN}", blob(40_000))
    out = tmp_path / "o"
    with pytest.raises(DataError, match=r"d/sample_train.tar.gz: checksum mismatch: sha256"):
        download(f"s3://{s3.bucket}/d/", out, sha256={TRAIN: "ab" * 32}, options=opts(s3))
    assert visible(out) == [] and hidden_partials(out) == []


def test_corrupted_bytes_fail_the_etag_md5(s3, tmp_path, monkeypatch):
    data = blob(30_000)
    s3.put(f"d/{TRAIN}", data)
    real = s3mod.S3Source._get_range

    def flip(self, remote, rng, budget):  # bytes damaged between S3 and the disk
        got = bytearray(real(self, remote, rng, budget))
        got[len(got) // 2] ^= 0xFF
        return bytes(got)

    monkeypatch.setattr(s3mod.S3Source, "_get_range", flip)
    out = tmp_path / "o"
    with pytest.raises(DataError, match=r"checksum mismatch: md5 .* from the S3 ETag"):
        download(f"s3://{s3.bucket}/d/", out, options=opts(s3))
    assert visible(out) == [] and hidden_partials(out) == []


def test_second_run_skips_verified_files_without_get(s3, tmp_path):
    small, big = blob(20_000), blob(6 * MiB)
    s3.put(f"r/{TRAIN}", small)
    s3.put(f"r/{TEST}", big, part_size=5 * MiB)  # multipart: verified by the receipt
    out = tmp_path / "o"
    download(f"s3://{s3.bucket}/r/", out, options=opts(s3, part_size=2 * MiB))
    assert s3.gets(f"r/{TRAIN}") == 1 and s3.gets(f"r/{TEST}") == 3
    s3.faults.requests.clear()
    res = download(f"s3://{s3.bucket}/r/", out, options=opts(s3))
    assert s3.gets(f"r/{TRAIN}") == 0 and s3.gets(f"r/{TEST}") == 0  # HEAD only
    summary = res.summary()
    assert summary["skipped"] == 2 and summary["downloaded"] == 0 and summary["bytes"] == 0
    assert summary["files"][TEST]["checks"] == ["size", "sha256 (receipt of the verified download)"]

    # A local file damaged since: detected and fetched again.
    raw = bytearray((out / TRAIN).read_bytes())
    raw[10] ^= 1
    (out / TRAIN).write_bytes(bytes(raw))
    s3.faults.requests.clear()
    res = download(f"s3://{s3.bucket}/r/", out, options=opts(s3))
    assert s3.gets(f"r/{TRAIN}") == 1 and (out / TRAIN).read_bytes() == small
    assert res.summary()["skipped"] == 1

    # force: fetched again although verified.
    s3.faults.requests.clear()
    download(f"s3://{s3.bucket}/r/", out, force=True, options=opts(s3))
    assert s3.gets(f"r/{TRAIN}") == 1


def test_slowdown_is_retried(s3, tmp_path, caplog):
    data = blob(3 * MiB)
    s3.put(f"t/{TRAIN}", data)
    s3.faults.slowdown = 3
    with caplog.at_level(logging.WARNING, logger="deepcvr"):
        res = download(f"s3://{s3.bucket}/t/", tmp_path / "o", options=opts(s3, part_size=MiB))
    assert (tmp_path / "o" / TRAIN).read_bytes() == data
    assert res.files[0].retries == 3 and caplog.text.count("SlowDown") == 3


def test_part_cut_mid_body_is_fetched_again(s3, tmp_path, caplog):
    data = blob(4 * MiB + 5)
    s3.put(f"t/{TRAIN}", data)
    s3.faults.cuts = 2
    with caplog.at_level(logging.WARNING, logger="deepcvr"):
        res = download(f"s3://{s3.bucket}/t/", tmp_path / "o", options=opts(s3, part_size=MiB))
    assert (tmp_path / "o" / TRAIN).read_bytes() == data
    assert res.files[0].retries == 2 and res.files[0].checks == ["size", "md5 (S3 ETag)"]
    assert s3.gets(f"t/{TRAIN}") == 5 + 2
    assert "IncompleteRead" in caplog.text or "ResponseStreamingError" in caplog.text


def test_partial_from_an_earlier_run_is_resumed(s3, tmp_path):
    data = blob(4 * MiB)
    s3.put(f"t/{TRAIN}", data)
    s3.faults.cut_after, s3.faults.cuts = 2, 100  # parts 1-2 arrive, then every GET is cut
    out = tmp_path / "o"
    one_by_one = opts(s3, part_size=MiB, concurrency=1, max_retry_seconds=0)
    with pytest.raises(GaveUp, match=r"giving up"):
        download(f"s3://{s3.bucket}/t/", out, options=one_by_one)
    assert visible(out) == [] and (out / f".tmp-{TRAIN}.part").stat().st_size == 2 * MiB
    s3.faults.cuts = 0
    s3.faults.requests.clear()
    res = download(f"s3://{s3.bucket}/t/", out, options=opts(s3, part_size=MiB))
    ranges = sorted(r for m, p, r in s3.faults.requests if m == "GET" and p.endswith(TRAIN))
    assert ranges == [f"bytes={a}-{a + MiB - 1}" for a in (2 * MiB, 3 * MiB)]
    assert (out / TRAIN).read_bytes() == data and hidden_partials(out) == []
    assert res.files[0].transferred == 2 * MiB and res.files[0].checks[1] == "md5 (S3 ETag)"

    # A new version of the object at the source: the stale partial is not reused.
    s3.faults.cut_after, s3.faults.cuts = 1, 100
    new = blob(4 * MiB, 7)
    s3.put(f"t/{TRAIN}", new)
    with pytest.raises(GaveUp):
        download(f"s3://{s3.bucket}/t/", out, options=one_by_one)
    s3.put(f"t/{TRAIN}", blob(4 * MiB, 8))
    s3.faults.cuts = 0
    s3.faults.requests.clear()
    download(f"s3://{s3.bucket}/t/", out, options=opts(s3, part_size=MiB))
    assert s3.gets(f"t/{TRAIN}") == 4  # from byte 0


def test_throttled_too_long_gives_up(s3, tmp_path):
    s3.put(f"t/{TRAIN}", blob(1000))
    s3.faults.slowdown = 10_000
    with pytest.raises(DataError, match=r"t/sample_train.tar.gz: 503 SlowDown .* giving up"):
        download(f"s3://{s3.bucket}/t/", tmp_path / "o", options=opts(s3, max_retry_seconds=0.3))
    assert visible(tmp_path / "o") == [] and hidden_partials(tmp_path / "o") == []


def test_explicit_keys_and_files(s3, tmp_path):
    a, b = blob(1000), blob(2000)
    s3.put("x/y/sample_train.tar.gz", a)
    s3.put("z/other.bin", b)
    res = download(
        f"s3://{s3.bucket}/",
        tmp_path / "k",
        keys=["x/y/sample_train.tar.gz", "z/other.bin"],
        options=opts(s3),
    )
    assert [f.name for f in res.files] == [TRAIN, "other.bin"]
    assert (tmp_path / "k" / "other.bin").read_bytes() == b
    res = download(f"s3://{s3.bucket}/", tmp_path / "g", files=["z/*"], options=opts(s3))
    assert (tmp_path / "g" / "z" / "other.bin").read_bytes() == b
    one = download(f"s3://{s3.bucket}/z/other.bin", tmp_path / "one", options=opts(s3))
    assert [f.name for f in one.files] == ["other.bin"]


def test_anonymous_access(s3, tmp_path, monkeypatch):
    s3.client.put_object(
        Bucket=s3.bucket, Key=f"pub/{TRAIN}", Body=b"public bytes", ACL="public-read"
    )
    aws_env(monkeypatch, tmp_path, credentials=False)
    download(f"s3://{s3.bucket}/pub/", tmp_path / "o", options=opts(s3, anonymous=True))
    assert (tmp_path / "o" / TRAIN).read_bytes() == b"public bytes"


# --- bad input: one line, naming the bucket/key, nothing left -----------------------------------


def test_no_credentials(s3, tmp_path, monkeypatch):
    aws_env(monkeypatch, tmp_path, credentials=False)
    with pytest.raises(ConfigError, match=rf"^s3://{s3.bucket}/p/: no AWS credentials found"):
        download(f"s3://{s3.bucket}/p/", tmp_path / "o", options=opts(s3))


def test_empty_prefix_and_no_archive(s3, tmp_path):
    with pytest.raises(DataError, match=rf"s3://{s3.bucket}/nothing/: nothing there"):
        download(f"s3://{s3.bucket}/nothing/", tmp_path / "o", options=opts(s3))
    s3.put("other/readme.txt", b"x")
    with pytest.raises(DataError, match=r"no Ali-CCP archive .*found: readme.txt"):
        download(f"s3://{s3.bucket}/other/", tmp_path / "o", options=opts(s3))
    with pytest.raises(DataError, match=r"nothing matches '\*.gz'"):
        download(f"s3://{s3.bucket}/other/", tmp_path / "o", files=["*.gz"], options=opts(s3))


def test_missing_bucket_and_key(s3, tmp_path):
    with pytest.raises(DataError, match=r"^s3://no-such-bucket-dcvr: no such bucket"):
        download("s3://no-such-bucket-dcvr/p/", tmp_path / "o", options=opts(s3))
    with pytest.raises(DataError, match=r"^s3://no-such-bucket-dcvr: no such bucket"):
        download("s3://no-such-bucket-dcvr/", tmp_path / "o", keys=["a/b"], options=opts(s3))
    with pytest.raises(DataError, match=rf"^s3://{s3.bucket}/p/{TEST}: no such key \(404"):
        download(f"s3://{s3.bucket}/p/", tmp_path / "o", files=[TEST], options=opts(s3))
    assert visible(tmp_path / "o") == []


def test_access_denied(s3, tmp_path, monkeypatch):
    """moto with IAM enforcement on: a user without s3 permissions gets 403 AccessDenied."""
    import boto3
    from moto import settings

    s3.put(f"p/{TRAIN}", b"secret data")
    iam = boto3.client("iam", endpoint_url=s3.url, region_name="us-east-1")
    user = f"nobody-{s3.bucket}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    with pytest.raises(DataError, match=rf"^s3://{s3.bucket}/p/: access denied \(403"):
        download(f"s3://{s3.bucket}/p/", tmp_path / "o", options=opts(s3))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)  # unknown to IAM
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    with pytest.raises(DataError, match=r"credentials rejected \(403 InvalidAccessKeyId\)"):
        download(f"s3://{s3.bucket}/p/", tmp_path / "o", options=opts(s3))
    with pytest.raises(DataError, match=rf"^s3://{s3.bucket}/p/{TRAIN}: access denied \(403\)"):
        download(f"s3://{s3.bucket}/p/", tmp_path / "o", files=[TRAIN], options=opts(s3))
    assert visible(tmp_path / "o") == []


def test_disk_full_midway_removes_the_partial(s3, tmp_path, monkeypatch):
    import errno

    s3.put(f"p/{TRAIN}", blob(3 * MiB))
    calls = {"n": 0}
    real_write = verify.Sink.write

    def write(self, data):
        calls["n"] += 1
        if calls["n"] == 2:
            raise self._error(OSError(errno.ENOSPC, "No space left on device"))
        real_write(self, data)

    monkeypatch.setattr(verify.Sink, "write", write)
    out = tmp_path / "o"
    with pytest.raises(DataError, match=r"sample_train.tar.gz: no space left on device"):
        download(f"s3://{s3.bucket}/p/", out, options=opts(s3, part_size=MiB))
    assert visible(out) == [] and hidden_partials(out) == []


def test_cli_error_is_one_line_and_secret_free(s3, tmp_path):
    ws = tmp_path / "ws"
    result = CliRunner().invoke(
        app,
        ["-q", "download", f"s3://{s3.bucket}/missing/", str(ws / "ext"), "--workspace", str(ws),
         "--endpoint-url", s3.url],
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: s3://{s3.bucket}/missing/: nothing there")
    assert result.stderr.count("\n") == 1
    assert FAKE_SECRET not in result.output and FAKE_KEY_ID not in result.output


def test_cli_records_assets(s3, tmp_path):
    data = blob(10_000)
    s3.put(f"c/{TRAIN}", data)
    ws = tmp_path / "ws"
    args = ["download", f"s3://{s3.bucket}/c/", str(ws / "ext"), "--workspace", str(ws)]
    result = CliRunner().invoke(app, [*args, "--endpoint-url", s3.url])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["downloaded"] == 1 and summary["files"][TRAIN]["bytes"] == len(data)
    store = MetadataStore.for_workspace(ws, create=False)
    (asset,) = store.assets()
    assert asset["uri"] == f"s3://{s3.bucket}/c/{TRAIN}" and asset["kind"] == "archive"
    assert asset["bytes"] == len(data) and asset["checksum"] == f"sha256:{sha256(data)}"
    run = store.latest_run()
    (rec,) = store.records(run["run_id"], "download")
    assert rec["key"] == TRAIN and rec["value"]["status"] == "downloaded"
    again = CliRunner().invoke(app, [*args, "--endpoint-url", s3.url])
    assert json.loads(again.stdout)["skipped"] == 1
    assert len(store.assets()) == 2  # the verified-and-skipped file is recorded too
