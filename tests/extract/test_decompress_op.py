"""The `extract.decompress` op: both splits unpack at once; a failure or Ctrl-C in one leaves
no partial output and reports the split that failed."""

from __future__ import annotations

import gzip
import threading
from pathlib import Path

import pytest

from deepcvr import cancel
from deepcvr.errors import DataError
from deepcvr.extract import decompress as dmod
from deepcvr.extract.ops import DecompressParams, decompress_op
from deepcvr.pipeline.ops import OpContext
from tests.extract.test_decompress import flip, good_members, make_archive, snapshot, tar_bytes


def _archives(tmp_path: Path) -> Path:
    for split in ("train", "test"):
        make_archive(tmp_path, good_members(split), name=f"sample_{split}.tar.gz")
    return tmp_path / "src"


def _run(tmp_path: Path, src: Path) -> dict:
    ctx = OpContext(workspace=tmp_path / "ws", run_id="r1", task="decompress")
    return decompress_op(ctx, DecompressParams(source=str(src)))


def test_both_splits_unpack_concurrently(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _archives(tmp_path)
    both_running = threading.Barrier(2, timeout=10)
    real_copy = dmod._copy

    def copy_when_both_run(*args, **kwargs):  # type: ignore[no-untyped-def]
        both_running.wait()  # times out (BrokenBarrierError) if the splits ran one by one
        return real_copy(*args, **kwargs)

    monkeypatch.setattr(dmod, "_copy", copy_when_both_run)
    summary = _run(tmp_path, src)
    raw = tmp_path / "ws" / "raw"
    assert set(summary["splits"]) == {"train", "test"}
    for split in ("train", "test"):
        assert sorted(snapshot(raw / split)) == [
            f"common_features_{split}.csv",
            f"sample_skeleton_{split}.csv",
        ]
    assert summary["bytes_out"] == sum(p.stat().st_size for p in raw.rglob("*.csv"))


def test_a_corrupt_split_fails_the_op_and_leaves_no_partial_output(tmp_path: Path) -> None:
    src = _archives(tmp_path)
    good = gzip.compress(tar_bytes(good_members("test")))
    (src / "sample_test.tar.gz").write_bytes(flip(good, len(good) - 8))
    with pytest.raises(DataError, match=r"sample_test\.tar\.gz.*CRC"):
        _run(tmp_path, src)
    raw = tmp_path / "ws" / "raw"
    assert not (raw / "test").exists()
    assert not [p for p in raw.rglob("*") if p.name.startswith(".tmp-")]


def test_ctrl_c_stops_both_splits_without_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _archives(tmp_path)
    real_copy = dmod._copy

    def copy_then_interrupt(*args, **kwargs):  # type: ignore[no-untyped-def]
        cancel.request()  # what the runner does on Ctrl-C
        return real_copy(*args, **kwargs)

    monkeypatch.setattr(dmod, "_copy", copy_then_interrupt)
    try:
        with pytest.raises(cancel.Interrupted):
            _run(tmp_path, src)
    finally:
        cancel.reset()
    raw = tmp_path / "ws" / "raw"
    assert not raw.exists() or not any(raw.iterdir())
