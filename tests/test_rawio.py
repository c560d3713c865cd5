"""Raw CSV I/O past the page cache: exact bytes whatever the sizes, and plain I/O as a fallback."""

from __future__ import annotations

import errno
import os
import pickle
import random

import pytest

from deepcvr import rawio
from deepcvr.rawio import ALIGN, DirectWriter, RangeReader, SharedSlots, read_bytes


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of three pages, so a few KiB of data cross several of them."""
    monkeypatch.setattr(rawio, "DIRECT_BLOCK", 3 * ALIGN)


def _pieces(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    pieces, at = [], 0
    while at < len(data):
        n = rng.choice([1, 7, ALIGN - 1, ALIGN, ALIGN + 1, 2 * ALIGN + 3, 5 * ALIGN])
        pieces.append(data[at : at + n])
        at += n
    return pieces


@pytest.mark.parametrize("size", [0, 1, ALIGN - 1, ALIGN, 3 * ALIGN, 3 * ALIGN + 1, 50_000])
def test_writer_writes_exactly_the_stream(tmp_path, small_blocks, size):
    data = random.Random(size).randbytes(size)
    path = tmp_path / "out.csv"
    with DirectWriter(path) as out:
        for piece in _pieces(data, size):
            out.write(piece)
        out.finish()
    assert out.size == size
    assert path.read_bytes() == data


def _file_system(path) -> str:
    """The type of the file system holding `path` (from /proc/mounts), '' if unknown."""
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split()[1:3] for line in f]
    except OSError:
        return ""
    real = os.path.realpath(path)
    inside = [(m, t) for m, t in mounts if real == m or real.startswith(m.rstrip("/") + "/")]
    return max(inside, key=lambda mt: len(mt[0]))[1] if inside else ""


def test_writer_and_reader_bypass_the_cache_on_ext4_and_xfs(tmp_path):
    if _file_system(tmp_path) not in ("ext4", "xfs"):
        pytest.skip(f"O_DIRECT is not checked on {_file_system(tmp_path) or 'this file system'}")
    with DirectWriter(tmp_path / "out.csv") as out:
        out.write(b"a,b\n")
        out.finish()
    with RangeReader(str(tmp_path / "out.csv"), ALIGN) as reader:
        buffer, offset, n = reader.read(2, 10)
        assert buffer[offset : offset + n] == b"b\n"
    assert out.direct and reader.direct


def _refuse_direct_open(monkeypatch):
    real_open = os.open

    def no_direct(path, flags, *args):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_direct)


def test_writer_falls_back_to_plain_writes_when_o_direct_is_refused(tmp_path, monkeypatch):
    _refuse_direct_open(monkeypatch)
    data = random.Random(1).randbytes(10_001)
    with DirectWriter(tmp_path / "out.csv") as out:
        for piece in _pieces(data, 1):
            out.write(piece)
        out.finish()
    assert not out.direct
    assert (tmp_path / "out.csv").read_bytes() == data


def test_writer_goes_on_plainly_when_a_direct_write_is_refused(tmp_path, small_blocks, monkeypatch):
    """A device whose blocks are larger than a page refuses the aligned writes (EINVAL)."""
    real_write = os.write
    refused = []

    def refuse_first(fd, data):
        if not refused:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", refuse_first)
    data = random.Random(2).randbytes(7 * ALIGN + 5)
    with DirectWriter(tmp_path / "out.csv") as out:
        if not out.direct:
            pytest.skip("this file system refuses O_DIRECT at open")
        for piece in _pieces(data, 2):
            out.write(piece)
        out.finish()
    assert refused and not out.direct
    assert (tmp_path / "out.csv").read_bytes() == data


def test_writer_passes_other_write_errors_on(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with DirectWriter(tmp_path / "out.csv") as out, pytest.raises(OSError) as err:
        out.write(b"x" * 10)
        out.finish()
    assert err.value.errno == errno.ENOSPC


@pytest.fixture
def sample_file(tmp_path):
    data = random.Random(3).randbytes(5 * ALIGN + 123)
    path = tmp_path / "raw.csv"
    path.write_bytes(data)  # still in the page cache, dirty: direct reads must see it anyway
    return str(path), data


RANGES = [(0, 0), (0, 1), (1, 10), (ALIGN - 1, 2), (ALIGN, ALIGN), (100, 3 * ALIGN), (0, 10**6)]


@pytest.mark.parametrize(("start", "length"), [*RANGES, (5 * ALIGN + 120, 50), (10**6, 10)])
def test_reader_returns_exactly_the_range(sample_file, start, length):
    path, data = sample_file
    with RangeReader(path, ALIGN) as reader:  # smaller than most ranges: the buffer grows
        buffer, offset, n = reader.read(start, length)
        assert buffer[offset : offset + n] == data[start : start + length]


def test_reader_reads_one_range_after_another(sample_file):
    path, data = sample_file
    with RangeReader(path, 3 * ALIGN) as reader:
        for start, length in RANGES * 2:
            buffer, offset, n = reader.read(start, length)
            assert buffer[offset : offset + n] == data[start : start + length]


def test_reader_falls_back_to_plain_reads_when_o_direct_is_refused(sample_file, monkeypatch):
    _refuse_direct_open(monkeypatch)
    path, data = sample_file
    with RangeReader(path, ALIGN) as reader:
        assert not reader.direct
        for start, length in RANGES:
            buffer, offset, n = reader.read(start, length)
            assert buffer[offset : offset + n] == data[start : start + length]


def test_read_bytes_reuses_the_threads_buffer(sample_file):
    path, data = sample_file
    assert read_bytes(path, 10, 3 * ALIGN) == data[10 : 10 + 3 * ALIGN]
    kept = rawio._thread.buffer
    assert read_bytes(path, ALIGN + 7, 2 * ALIGN) == data[ALIGN + 7 : 3 * ALIGN + 7]
    assert rawio._thread.buffer is kept


def test_shared_slots_hand_bytes_to_another_process(tmp_path):
    """What the parent reads into a slot, a worker process copies out through /proc."""
    import subprocess
    import sys

    slots = SharedSlots(2, 3 * ALIGN)
    if not slots.available:
        pytest.skip("no memfd or /proc here: workers read their chunks themselves")
    taken = [slots.take(), slots.take()]
    assert None not in taken and slots.take() is None  # all in use
    (index, buffer), _ = taken
    payload = random.Random(4).randbytes(2 * ALIGN + 17)
    buffer[100 : 100 + len(payload)] = payload
    shared = slots.share(index, 100, len(payload))
    code = (
        "import pickle, sys; shared = pickle.loads(sys.stdin.buffer.read()); "
        "sys.stdout.buffer.write(shared.read())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], input=pickle.dumps(shared), capture_output=True, check=True
    )
    assert out.stdout == payload
    slots.give_back(index)
    assert slots.take() == (index, buffer)
    slots.close()


def test_no_slots_where_memfd_is_missing(monkeypatch):
    monkeypatch.delattr(os, "memfd_create", raising=False)
    slots = SharedSlots(4, ALIGN)
    assert not slots.available and slots.take() is None
