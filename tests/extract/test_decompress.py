"""decompress(): good archives unpack byte-identically; bad ones fail in one line, leave nothing."""

from __future__ import annotations

import errno
import gzip
import io
import logging
import os
import sys
import tarfile
from pathlib import Path

import pytest

from deepcvr import rawio
from deepcvr.errors import DataError
from deepcvr.extract import gz
from deepcvr.extract.decompress import DecompressResult, decompress, find_archives

COMMON = b"aaaa000011112222,2,101\x0231\x031.0\x01124\x0241\x031.0\n" * 50
SKELETON = b"1,0,0,aaaa000011112222,1,205\x02900\x031.0\n" * 80


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def reg(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def good_members(split: str = "train") -> list:
    folder = tarfile.TarInfo(f"sample_{split}")
    folder.type = tarfile.DIRTYPE
    return [
        (folder, None),
        reg(f"sample_{split}/sample_skeleton_{split}.csv", SKELETON),
        reg("README.txt", b"not a data file\n"),
        reg(f"common_features_{split}.csv", COMMON),
    ]


def write(tmp_path: Path, blob: bytes, name: str = "sample_train.tar.gz") -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return path


def make_archive(tmp_path: Path, members=None, name="sample_train.tar.gz", level=6) -> Path:
    data = tar_bytes(members if members is not None else good_members())
    return write(tmp_path, gzip.compress(data, compresslevel=level), name)


def assert_clean(raw_root: Path, split: str = "train", before: dict | None = None) -> None:
    out = raw_root / split
    if before is None:
        assert not out.exists()
    else:
        assert snapshot(out) == before
    if raw_root.exists():
        assert not [p for p in raw_root.rglob("*") if p.name.startswith(".tmp-")]


def snapshot(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.fixture(params=["isal", "stdlib"])
def impl(request, monkeypatch) -> str:
    """Run a test with ISA-L and again with the stdlib fallback (isal import blocked)."""
    if request.param == "stdlib":
        monkeypatch.setitem(sys.modules, "isal.igzip", None)
        monkeypatch.setattr(gz, "_warned", True)
    return request.param


# -- good archives ---------------------------------------------------------------------------


def test_good_archive(tmp_path, impl, caplog):
    archive = make_archive(tmp_path)
    raw_root = tmp_path / "raw"
    seen: list[int] = []
    with caplog.at_level(logging.INFO, logger="deepcvr"):
        res = decompress(archive, raw_root, advance=seen.append)
    out = raw_root / "train"
    assert res == DecompressResult(
        "train",
        archive,
        (out / "common_features_train.csv", out / "sample_skeleton_train.csv"),
        len(COMMON) + len(SKELETON),
    )
    assert (out / "common_features_train.csv").read_bytes() == COMMON
    assert (out / "sample_skeleton_train.csv").read_bytes() == SKELETON
    assert sorted(p.name for p in out.iterdir()) == [
        "common_features_train.csv",
        "sample_skeleton_train.csv",
    ]
    assert "README.txt" in caplog.text
    assert sum(seen) == archive.stat().st_size  # progress counts compressed bytes to the end
    assert_clean(raw_root, before=snapshot(out))


def test_default_progress_and_explicit_split(tmp_path):
    archive = make_archive(tmp_path, good_members("test"), name="downloaded.tgz")
    res = decompress(archive, tmp_path / "raw", split="test")
    assert res.split == "test"
    assert (tmp_path / "raw" / "test" / "sample_skeleton_test.csv").read_bytes() == SKELETON


def test_replaces_previous_output(tmp_path):
    out = tmp_path / "raw" / "train"
    out.mkdir(parents=True)
    (out / "stale.csv").write_text("old")
    decompress(make_archive(tmp_path), tmp_path / "raw")
    assert not (out / "stale.csv").exists()
    assert (out / "common_features_train.csv").read_bytes() == COMMON


def test_stdlib_fallback_warns_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "isal.igzip", None)
    monkeypatch.setattr(gz, "_warned", False)
    archive = make_archive(tmp_path)
    with caplog.at_level(logging.WARNING, logger="deepcvr"):
        with gz.open_gzip(archive) as f:
            assert f.read(2)
        with gz.open_gzip(archive) as f:
            assert f.read(2)
    assert caplog.text.count("isal is not installed") == 1


def test_find_archives(tmp_path):
    (tmp_path / "sample_train.tar.gz").write_bytes(b"x")
    (tmp_path / "sample_other.tar.gz").write_bytes(b"x")
    (tmp_path / "sample_test.tar.gz").mkdir()  # not a file
    assert find_archives(tmp_path) == {"train": tmp_path / "sample_train.tar.gz"}
    (tmp_path / "sample_test.tar.gz").rmdir()
    (tmp_path / "sample_test.tar.gz").write_bytes(b"x")
    assert set(find_archives(tmp_path)) == {"train", "test"}
    assert find_archives(tmp_path / "missing") == {}


# -- bad archives ----------------------------------------------------------------------------


def fail(archive: Path, raw_root: Path, *expected: str, split: str | None = None) -> str:
    with pytest.raises(DataError) as info:
        decompress(archive, raw_root, split=split, advance=lambda n: None)
    msg = str(info.value)
    assert "\n" not in msg
    assert archive.name in msg
    for part in expected:
        assert part in msg, msg
    return msg


def flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0xFF]) + blob[at + 1 :]


def corrupt_cases() -> dict[str, tuple[bytes, tuple[str, ...]]]:
    tar = tar_bytes(good_members())
    good = gzip.compress(tar)
    stored = gzip.compress(tar, compresslevel=0)  # byte 11 is a stored block's LEN field
    bad_header = bytearray(tar)
    bad_header[512 + 148 : 512 + 156] = b"0000000\0"  # checksum of the second header
    no_end = tar.rstrip(b"\0")  # drop the zero blocks that mark the end of a tar
    no_end += b"\0" * (-len(no_end) % 512)
    return {
        "not_gzip": (b"PK\x03\x04" + b"\0" * 100, ("not a gzip file", "PK")),
        "empty": (b"", ("empty file",)),
        "truncated": (good[: len(good) // 2], ("corrupt or truncated gzip",)),
        "truncated_tail": (good[:-3], ("corrupt or truncated gzip",)),
        "stored_block": (flip(stored, 11), ("corrupt or truncated gzip", "byte offset")),
        "flipped_middle": (flip(good, len(good) // 2), ("corrupt or truncated gzip",)),
        "bad_crc": (flip(good, len(good) - 8), ("corrupt or truncated gzip", "CRC")),
        "not_tar": (gzip.compress(b"hello world\n" * 100), ("corrupt tar structure",)),
        "bad_tar_header": (gzip.compress(bytes(bad_header)), ("corrupt tar structure",)),
        "truncated_tar": (gzip.compress(tar[: 512 * 3]), ("corrupt tar structure",)),
        "no_end_marker": (gzip.compress(no_end), ("end-of-archive marker",)),
    }


@pytest.mark.parametrize("case", list(corrupt_cases()))
def test_corrupt_archive(tmp_path, impl, case):
    blob, expected = corrupt_cases()[case]
    fail(write(tmp_path, blob), tmp_path / "raw", *expected)
    assert_clean(tmp_path / "raw")


def test_corrupt_archive_keeps_previous_output(tmp_path):
    out = tmp_path / "raw" / "train"
    out.mkdir(parents=True)
    (out / "common_features_train.csv").write_bytes(b"previous")
    before = snapshot(out)
    good = gzip.compress(tar_bytes(good_members()))
    fail(write(tmp_path, flip(good, len(good) - 8)), tmp_path / "raw", "CRC")
    assert_clean(tmp_path / "raw", before=before)


UNSAFE = {
    "absolute": (reg("/etc/passwd", b"x"), "absolute path"),
    "dotdot": (reg("../../etc/passwd", b"x"), "path escapes the output directory"),
    "dotdot_inner": (reg("a/../../b.csv", b"x"), "path escapes the output directory"),
    "symlink": (special("link.csv", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
    "hardlink": (
        special("sample_skeleton_train.csv", tarfile.LNKTYPE, "common_features_train.csv"),
        "hard link",
    ),
    "chardev": (special("dev", tarfile.CHRTYPE), "device file"),
    "blockdev": (special("blk", tarfile.BLKTYPE), "device file"),
    "fifo": (special("pipe", tarfile.FIFOTYPE), "FIFO"),
}


@pytest.mark.parametrize("case", list(UNSAFE))
def test_unsafe_member_refuses_everything(tmp_path, case):
    member, reason = UNSAFE[case]
    # The unsafe member comes last, after both CSVs were already streamed out.
    archive = make_archive(tmp_path, [*good_members(), member])
    msg = fail(archive, tmp_path / "raw", "unsafe member", reason, "refusing to extract anything")
    assert repr(member[0].name) in msg
    assert_clean(tmp_path / "raw")


@pytest.mark.parametrize("missing", ["sample_skeleton_train.csv", "common_features_train.csv"])
def test_missing_member(tmp_path, missing):
    members = [m for m in good_members() if not m[0].name.endswith(missing)]
    archive = make_archive(tmp_path, members)
    fail(archive, tmp_path / "raw", f"missing expected member {missing}", "Ali-CCP")
    assert_clean(tmp_path / "raw")


def test_duplicate_member(tmp_path):
    archive = make_archive(tmp_path, [*good_members(), reg("x/common_features_train.csv", b"1")])
    fail(archive, tmp_path / "raw", "duplicate member common_features_train.csv")
    assert_clean(tmp_path / "raw")


def test_archive_missing(tmp_path):
    fail(tmp_path / "sample_train.tar.gz", tmp_path / "raw", "archive not found")
    assert_clean(tmp_path / "raw")


def test_archive_unreadable(tmp_path):
    archive = tmp_path / "sample_train.tar.gz"
    archive.mkdir()  # readable by nobody as a file, even root
    fail(archive, tmp_path / "raw", "cannot read archive")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_archive_no_permission(tmp_path):
    archive = make_archive(tmp_path)
    archive.chmod(0)
    fail(archive, tmp_path / "raw", "cannot read archive")


def test_unknown_split_name(tmp_path):
    archive = make_archive(tmp_path, name="sample_valid.tar.gz")
    fail(archive, tmp_path / "raw", "cannot tell the split")
    fail(archive, tmp_path / "raw", "unknown split 'valid'", split="valid")


def test_output_not_writable(tmp_path):
    raw_root = tmp_path / "raw"
    raw_root.write_text("a file where the output directory should be")
    fail(make_archive(tmp_path), raw_root, "cannot write", "choose another workspace")
    assert raw_root.read_text().startswith("a file")


def test_disk_full(tmp_path, monkeypatch):
    def full(self, data) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rawio.DirectWriter, "write", full)
    raw_root = tmp_path / "raw"
    msg = fail(make_archive(tmp_path), raw_root, "no space left on device writing")
    assert str(raw_root / "train") in msg
    assert_clean(raw_root)
