"""The local engine: chunking, parallel workers, cross-chunk checks, accounting, resume."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import polars as pl
import pytest

from deepcvr.errors import DataError
from deepcvr.synth import generate
from deepcvr.transform import reasons as P
from deepcvr.transform.chunks import RawSource, _plan_stream, plan_chunks, read_range
from deepcvr.transform.engine import TransformOptions, transform
from tests.helpers import read_raw

TABLES = (
    "common_feature_group",
    "common_feature",
    "sample",
    "sample_feature",
    "feature",
    "rejects",
)
KEYS = {
    "common_feature_group": ["common_feature_index"],
    "common_feature": ["common_feature_index", "position"],
    "sample": ["sample_id"],
    "sample_feature": ["sample_id", "position"],
    "feature": ["feature_id"],
    "rejects": ["file", "line", "position", "reason"],
}


def read_tables(out: Path, split: str = "train") -> dict[str, pl.DataFrame]:
    frames = {}
    for table in TABLES:
        files = sorted((out / split / table).glob("*.parquet"))
        frames[table] = (
            pl.concat([pl.read_parquet(f) for f in files]).sort(KEYS[table])
            if files
            else pl.DataFrame()
        )
    return frames


def make_raw(d: Path, samples: int) -> Path:
    """Generated data with bad lines appended: duplicates across chunks, conflicts, rejects."""
    generate(d, samples, "train", seed=5)
    skeleton = d / "sample_skeleton_train.csv"
    common = d / "common_features_train.csv"
    first_index = common.read_text().split(",", 1)[0]
    with skeleton.open("a") as f:
        f.write(f"1,0,0,{first_index},1,205\x021\x031.0\n")  # duplicate of line 1, far away
        f.write(f"999999,0,0,{first_index},2,205\x02x\x031.0\x01206\x022\x030.5\n")
        f.write("bad line\n")
        f.write(f"999998,0,1,{first_index},1,301\x0250\x031.0\n")  # (0,1) is kept
    return d


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_raw(tmp_path_factory.mktemp("raw"), 3000)


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_raw(tmp_path_factory.mktemp("small"), 150)


def test_chunk_plan_covers_every_byte_and_line(raw: Path) -> None:
    path = raw / "sample_skeleton_train.csv"
    data = path.read_bytes()
    for chunk_bytes in (1, 7, 100, 4096, 10**9):
        source = RawSource(str(path))
        planned = list(plan_chunks(source, "train", "skeleton", chunk_bytes))
        specs = [spec for spec, _ in planned]
        # A file's chunks carry no bytes (workers read their range); a stream's carry them.
        assert all(chunk is None for _, chunk in planned)
        assert b"".join(read_range(spec) for spec in specs) == data
        with source.open() as f:
            streamed = list(_plan_stream(f, source, "train", "skeleton", chunk_bytes))
        assert [spec for spec, _ in streamed] == specs
        assert b"".join(chunk for _, chunk in streamed) == data
        assert specs[0].start == 0 and specs[0].first_line == 1
        for a, b in itertools.pairwise(specs):
            assert a.start + a.length == b.start
            assert data[b.start - 1 : b.start] == b"\n"  # boundaries fall after a newline
            assert b.first_line == a.first_line + data[a.start : b.start].count(b"\n")
        assert specs[-1].start + specs[-1].length == len(data) and specs[-1].at_file_end


@pytest.mark.parametrize(
    "data",
    [b"", b"a\nbb\nccc", b"x" * 100 + b"\n" + b"y" * 50, b"\n\n", b"abc", b"q\n" + b"z" * 70],
)
def test_file_and_stream_plans_agree_on_odd_files(data: bytes, tmp_path: Path) -> None:
    """No final newline, lines longer than a chunk, empty lines: both planners cut alike."""
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    source = RawSource(str(path))
    for chunk_bytes in (1, 3, 64, 10**6):
        specs = [spec for spec, _ in plan_chunks(source, "train", "common", chunk_bytes)]
        with source.open() as f:
            streamed = list(_plan_stream(f, source, "train", "common", chunk_bytes))
        assert [spec for spec, _ in streamed] == specs, chunk_bytes
        assert b"".join(read_range(spec) for spec in specs) == data


def test_output_is_identical_whatever_workers_and_chunk_size(
    small_raw: Path, tmp_path: Path
) -> None:
    """Chunks smaller than a line and boundaries inside lines change nothing."""
    results = {}
    for workers, chunk_bytes in [(1, 10**9), (1, 50), (2, 3_000), (2, 1)]:
        out = tmp_path / f"w{workers}-c{chunk_bytes}"
        transform(
            small_raw,
            out,
            ["train"],
            TransformOptions(workers=workers, chunk_bytes=chunk_bytes, max_reject_ratio=1.0),
        )
        results[(workers, chunk_bytes)] = read_tables(out)
    reference = next(iter(results.values()))
    for key, frames in results.items():
        for table in TABLES:
            assert frames[table].equals(reference[table]), (key, table)


def test_rows_equal_declared_feature_num_and_cross_chunk_rejects(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = transform(
        raw, out, None, TransformOptions(workers=2, chunk_bytes=20_000, max_reject_ratio=1.0)
    )
    frames = read_tables(out)
    rejects = frames["rejects"]
    by_reason = dict(zip(rejects["reason"], rejects["line"], strict=False))
    assert by_reason[P.DUPLICATE_SAMPLE_ID] == 3001
    assert by_reason[P.BAD_FEATURE_ID] == 3002
    assert by_reason[P.WRONG_COLUMN_COUNT] == 3003
    # Every good line's structures are all there: rows = sum of declared feature_num.
    good = frames["sample"].filter(pl.col("sample_id") < 999998)
    assert frames["sample_feature"].filter(pl.col("sample_id") < 999998).height == (
        good.get_column("num_features").sum()
    )
    common = read_raw(raw / "common_features_train.csv", "common")
    assert frames["common_feature"].height == sum(n for n, _ in common.values())
    assert frames["sample"].filter(pl.col("sample_id") == 999998)["conversion"].to_list() == [1]
    acc = summary["splits"]["train"]["accounting"]
    assert acc["lines"] == 3004 + len(common)
    assert acc["lines"] == acc["loaded_lines"] + acc["rejected_lines"]
    assert acc["raw_structures"] == acc["loaded_structures"] + acc["rejected_structures"]
    # Each feature id belongs to one field.
    assert frames["feature"]["feature_id"].is_unique().all()


def test_conflict_across_chunks_keeps_first_field(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    idx = "0123456789abcdef"
    (raw / "common_features_train.csv").write_text(f"{idx},1,101\x027\x031.0\n")
    (raw / "sample_skeleton_train.csv").write_text(
        f"1,0,0,{idx},1,205\x028\x031.0\n"
        + f"2,0,0,{idx},1,206\x027\x031.0\n"
        + f"3,1,0,{idx},1,206\x028\x031.0\n"
    )
    out = tmp_path / "out"
    transform(raw, out, None, TransformOptions(workers=1, chunk_bytes=1, max_reject_ratio=1.0))
    frames = read_tables(out)
    assert frames["feature"].rows() == [(7, "101"), (8, "205")]
    assert frames["rejects"].select("line", "reason").rows() == [
        (2, P.FEATURE_FIELD_CONFLICT),
        (3, P.FEATURE_FIELD_CONFLICT),
    ]
    assert frames["sample"].height == 3 and frames["sample_feature"].height == 1


def test_reject_ratio_fails_after_writing_rejects(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"lines rejected .* see .*rejects"):
        transform(raw, out, None, TransformOptions(workers=1, max_reject_ratio=0.0))
    assert list((out / "train" / "rejects").glob("*.parquet"))
    assert not (out / "train" / "_manifest.json").exists()


def test_resume_reuses_completed_chunks(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    opts = TransformOptions(workers=1, chunk_bytes=100_000, max_reject_ratio=1.0)
    first = transform(raw, out, None, opts)
    chunks = first["splits"]["train"]["chunks"]
    manifest = out / "train" / "_chunks" / "s00001.json"
    manifest.unlink()  # as if killed before this chunk finished
    again = transform(raw, out, None, opts)
    assert again["splits"]["train"]["resumed_chunks"] == chunks - 1
    assert again["splits"]["train"]["accounting"] == first["splits"]["train"]["accounting"]
    forced = transform(
        raw,
        out,
        None,
        TransformOptions(workers=1, chunk_bytes=100_000, max_reject_ratio=1.0, force=True),
    )
    assert forced["splits"]["train"]["resumed_chunks"] == 0
    assert json.loads((out / "train" / "_manifest.json").read_text())["split"] == "train"


def test_missing_raw_files_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no raw files") as err:
        transform(tmp_path, tmp_path / "out", ["test"], TransformOptions(workers=1))
    assert "\n" not in str(err.value)


def test_stage_raw_off_reads_archives_with_identical_output(tmp_path: Path) -> None:
    archives = tmp_path / "archives"
    generate(archives, 1500, "train", seed=9, archive=True)
    raw = tmp_path / "raw" / "train"
    generate(raw, 1500, "train", seed=9)
    staged = tmp_path / "staged"
    transform(raw.parent, staged, None, TransformOptions(workers=2, chunk_bytes=50_000))
    streamed = tmp_path / "streamed"
    summary = transform(
        archives,
        streamed,
        None,
        TransformOptions(workers=2, chunk_bytes=50_000, stage_raw=False),
    )
    assert summary["splits"]["train"]["accounting"]["lines"] > 1500
    assert not list(tmp_path.glob("streamed/**/*.csv"))
    a, b = read_tables(staged), read_tables(streamed)
    for table in TABLES:
        assert a[table].equals(b[table]), table


def test_orphan_holds_no_key_whatever_the_chunking(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    idx, absent = "0123456789abcdef", "fedcba9876543210"
    (raw / "common_features_train.csv").write_text(f"{idx},1,101\x027\x031.0\n")
    (raw / "sample_skeleton_train.csv").write_text(
        f"1,0,0,{absent},1,205\x028\x031.0\n" + f"1,1,0,{idx},1,205\x028\x031.0\n"
    )
    for chunk_bytes in (10**9, 1):
        out = tmp_path / f"out{chunk_bytes}"
        transform(
            raw,
            out,
            None,
            TransformOptions(workers=1, chunk_bytes=chunk_bytes, max_reject_ratio=1.0),
        )
        frames = read_tables(out)
        assert frames["rejects"].select("line", "reason").rows() == [(1, P.ORPHAN_COMMON_INDEX)]
        assert frames["sample"].select("sample_id", "click").rows() == [(1, 1)]


def test_workers_size_their_own_polars_pool() -> None:
    """Workers share the cores: each runs Polars with cores // workers threads."""
    import os

    import polars as pl

    from deepcvr.transform.workers import ChunkRunner

    runner = ChunkRunner(2)
    try:
        assert runner.pool is not None
        sizes = {runner.pool.submit(pl.thread_pool_size).result() for _ in range(4)}
        assert sizes == {max(1, (os.cpu_count() or 1) // 2)}
    finally:
        runner.close()


@pytest.mark.parametrize("user_mmap", [None, "4096"])
def test_workers_keep_freed_memory(monkeypatch: pytest.MonkeyPatch, user_mmap: str | None) -> None:
    """Workers get the allocator settings that keep a chunk's pages across chunks: jemalloc's
    after whatever the environment holds (Polars' defaults; the last option wins), glibc's
    unless the user set one of them (then theirs alone: either setting alone is slower than
    none); the parent's environment is left as it was."""
    import os

    import polars as pl  # noqa: F401  (it puts its jemalloc defaults in the environment)

    from deepcvr.transform.workers import _KEEP_FREED_JEMALLOC, JEMALLOC_CONF, ChunkRunner

    before = os.environ[JEMALLOC_CONF]
    if user_mmap is None:
        monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    else:
        monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", user_mmap)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    runner = ChunkRunner(2)
    try:
        assert runner.pool is not None
        seen = {
            name: runner.pool.submit(os.getenv, name).result()
            for name in (JEMALLOC_CONF, "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
        }
    finally:
        runner.close()
    assert seen[JEMALLOC_CONF].endswith(f"{before},{_KEEP_FREED_JEMALLOC}")
    if user_mmap is None:
        assert seen["MALLOC_MMAP_THRESHOLD_"] == str(1 << 30)
        assert seen["MALLOC_TRIM_THRESHOLD_"] == str(1 << 31)
    else:
        assert seen["MALLOC_MMAP_THRESHOLD_"] == user_mmap
        assert seen["MALLOC_TRIM_THRESHOLD_"] is None
    assert os.environ[JEMALLOC_CONF] == before
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ
    assert os.environ.get("MALLOC_MMAP_THRESHOLD_") == user_mmap
