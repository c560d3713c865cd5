"""extract.download from disk: copy or hard-link, verified; disk full on a real small tmpfs."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from deepcvr.errors import ConfigError, DataError
from deepcvr.extract import partial, verify
from deepcvr.extract.download import download
from deepcvr.extract.ops import DownloadParams
from deepcvr.extract.sources import Options
from tests.extract.conftest import sha256

TRAIN, TEST = "sample_train.tar.gz", "sample_test.tar.gz"


def visible(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) if d.exists() else []


def partials(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith(".tmp-")) if d.exists() else []


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "archives"
    d.mkdir()
    (d / TRAIN).write_bytes(os.urandom(200_000))
    (d / TEST).write_bytes(os.urandom(100_000))
    (d / "notes.txt").write_text("not an archive")
    return d


def test_hard_link_on_the_same_filesystem(src, tmp_path):
    out = tmp_path / "ws" / "external"
    res = download(str(src), out)
    assert visible(out) == [TEST, TRAIN]
    assert os.path.samefile(src / TRAIN, out / TRAIN)
    summary = res.summary()
    assert {f["status"] for f in summary["files"].values()} == {"linked"}
    assert summary["bytes"] == 0 and summary["downloaded"] == 2
    assert summary["files"][TRAIN]["sha256"] == sha256((src / TRAIN).read_bytes())
    again = download(f"file://{src}", out)  # same inode: nothing to do
    assert again.summary()["skipped"] == 2


def test_copy_and_skip_by_receipt(src, tmp_path):
    out = tmp_path / "copy"
    res = download(str(src), out, options=Options(link=False))
    assert not os.path.samefile(src / TRAIN, out / TRAIN)
    assert (out / TRAIN).read_bytes() == (src / TRAIN).read_bytes()
    assert res.summary()["bytes"] == 300_000 and res.files[0].status == "copied"
    res = download(str(src), out, options=Options(link=False))
    assert [f.status for f in res.files] == ["skipped", "skipped"]
    os.utime(src / TRAIN, ns=(1, 1))  # the source changed version: copied again
    res = download(str(src), out, options=Options(link=False))
    assert [f.status for f in res.files] == ["copied", "skipped"]


def test_manifest_in_the_directory(src, tmp_path):
    good = sha256((src / TRAIN).read_bytes())
    (src / "SHA256SUMS").write_text(f"{good} *{TRAIN}\n{'1' * 64}  {TEST}\n")
    with pytest.raises(DataError, match=rf"{TEST}: checksum mismatch: sha256 .* SHA256SUMS"):
        download(str(src), tmp_path / "o")
    assert visible(tmp_path / "o") == [TRAIN]  # the good one is in place, the bad one is not
    (src / "SHA256SUMS").write_text("garbage\n")
    with pytest.raises(DataError, match=r"SHA256SUMS: line 1 is not 'SHA256  NAME'"):
        download(str(src), tmp_path / "o")


def test_source_is_the_output_directory(src, tmp_path):
    res = download(str(src), src)
    assert [f.status for f in res.files] == ["skipped", "skipped"]
    assert all("same file" in f.checks for f in res.files)
    (src / "SHA256SUMS").write_text(f"{'2' * 64}  {TRAIN}\n")
    with pytest.raises(DataError, match="checksum mismatch"):
        download(str(src), src, files=[TRAIN])
    assert (src / TRAIN).exists()  # the user's own file is reported, never deleted


def test_files_globs_and_single_file(src, tmp_path):
    (src / "sub").mkdir()
    (src / "sub" / "a.bin").write_bytes(b"a")
    res = download(str(src), tmp_path / "g", files=["*.txt", "sub/*"])
    assert [f.name for f in res.files] == ["notes.txt", "sub/a.bin"]
    assert (tmp_path / "g" / "sub" / "a.bin").read_bytes() == b"a"
    res = download(str(src / TEST), tmp_path / "one")
    assert visible(tmp_path / "one") == [TEST]


def test_bad_local_inputs(src, tmp_path):
    with pytest.raises(DataError, match=r"nope: no such file or directory"):
        download(str(tmp_path / "nope"), tmp_path / "o")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"empty: nothing there"):
        download(str(empty), tmp_path / "o")
    with pytest.raises(DataError, match=r"missing.gz not found \(found: notes.txt, "):
        download(str(src), tmp_path / "o", files=["missing.gz"])
    with pytest.raises(ConfigError, match=r"unsafe file name '../x'"):
        download(str(src), tmp_path / "o", files=["../x"])
    with pytest.raises(ConfigError, match=r"unsupported scheme 'ftp'"):
        download("ftp://host/x/", tmp_path / "o")


def test_params_model_rejects_bad_values():
    with pytest.raises(ValueError, match="unsupported scheme 'ftp'"):
        DownloadParams(source="ftp://x/")
    with pytest.raises(ValueError, match="not a SHA-256"):
        DownloadParams(source="s3://b/p/", sha256={TRAIN: "abc"})
    with pytest.raises(ValueError, match="keys: is for s3:// sources"):
        DownloadParams(source="https://h/d/", keys=["k"])
    assert DownloadParams(source="s3://b/", force=True).force_download  # YAML spelling


# --- disk full ----------------------------------------------------------------------------------


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 128 KiB filesystem (needs root and mount rights, else skipped)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_is_caught_before_downloading(src, tiny_tmpfs):
    out = tiny_tmpfs / "external"
    with pytest.raises(DataError, match=r"sample_train.tar.gz: not enough space: .* free"):
        download(str(src), out)
    assert visible(out) == [] and partials(out) == []


def test_disk_full_while_writing_a_real_tmpfs(src, tiny_tmpfs, monkeypatch):
    real = shutil.disk_usage
    # Pretend there is room, so the kernel's ENOSPC arrives mid-write.
    monkeypatch.setattr(partial.shutil, "disk_usage", lambda p: real(p)._replace(free=10**12))
    out = tiny_tmpfs / "external"
    with pytest.raises(DataError, match=r"sample_train.tar.gz: no space left on device"):
        download(str(src), out)
    assert visible(out) == [] and partials(out) == []


def test_disk_full_while_writing_simulated(src, tmp_path, monkeypatch):
    """Same as above wherever a tmpfs cannot be mounted: the write raises ENOSPC."""
    real_write = os.write

    def write(fd: int, data) -> int:
        if len(data) > 50_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(verify.Sink, "write", _sink_write_via(write))
    out = tmp_path / "o"
    with pytest.raises(DataError, match=r"sample_train.tar.gz: no space left on device"):
        download(str(src), out, options=Options(link=False))
    assert visible(out) == [] and partials(out) == []


def _sink_write_via(write):
    def sink_write(self, data: bytes) -> None:
        try:
            write(self._f.fileno(), data)
        except OSError as e:
            raise self._error(e) from None

    return sink_write
