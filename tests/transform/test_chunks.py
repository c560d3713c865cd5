"""Parquet parts: the model's types whatever the writer's shortcuts."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

from deepcvr.rawio import SharedBytes, SharedSlots
from deepcvr.schema import TABLES
from deepcvr.transform.chunks import RawSource, plan_chunks, read_range, write_frame


def _sample_features(splits: list[str | None]) -> pl.DataFrame:
    n = len(splits)
    return pl.DataFrame(
        {
            "split": splits,
            "sample_id": list(range(1, n + 1)),
            "position": [0] * n,
            "feature_id": [7] * n,
            "value": [0.5] * n,
        },
        schema={
            "split": pl.String,
            "sample_id": pl.Int64,
            "position": pl.Int16,
            "feature_id": pl.Int32,
            "value": pl.Float64,
        },
    )


@pytest.mark.parametrize(
    "splits",
    [["train"] * 5, ["train", "test", "train"], []],
    ids=["one split (dictionary)", "mixed splits", "empty"],
)
def test_parts_read_back_with_the_model_schema(splits: list[str | None], tmp_path: Path) -> None:
    frame = _sample_features(splits)
    part = tmp_path / "part.parquet"
    write_frame(frame, "sample_feature", part, "snappy")
    assert pq.read_schema(part) == TABLES["sample_feature"].arrow_schema()
    assert pl.read_parquet(part).equals(frame)


def test_a_missing_split_is_not_hidden_by_the_dictionary_shortcut(tmp_path: Path) -> None:
    """A null among equal values must not be written as the value (the column is NOT NULL)."""
    with pytest.raises(Exception, match="with null values to non-nullable"):
        write_frame(_sample_features(["train", None]), "sample_feature", tmp_path / "p", "snappy")


def test_long_tables_are_written_with_encodings_that_fit_their_columns(tmp_path: Path) -> None:
    """Keys in runs and positions counting up as deltas, values in a dictionary, uncompressed;
    read back row for row, by Polars and by DuckDB."""
    n = 50_000
    frame = pl.DataFrame(
        {
            "split": ["train"] * n,
            "sample_id": [i // 20 for i in range(n)],
            "position": [i % 20 for i in range(n)],
            "feature_id": [(i * 7919) % 100_003 for i in range(n)],
            "value": [[1.0, 0.69315, 1.09861][i % 3] for i in range(n)],
        },
        schema=_sample_features([]).schema,
    )
    part = tmp_path / "part.parquet"
    write_frame(frame, "sample_feature", part, "snappy")
    row_group = pq.ParquetFile(part).metadata.row_group(0)
    columns = {row_group.column(i).path_in_schema: row_group.column(i) for i in range(5)}
    for name in ("sample_id", "position"):
        assert "DELTA_BINARY_PACKED" in columns[name].encodings
    assert columns["value"].has_dictionary_page
    assert not columns["feature_id"].has_dictionary_page  # ids are many: plain
    assert {c.compression for c in columns.values()} == {"UNCOMPRESSED"}
    assert pl.read_parquet(part).equals(frame)
    loaded = duckdb.sql(f"SELECT * FROM read_parquet('{part}')").pl()
    assert loaded.sort("sample_id", "position").equals(frame)


def test_other_tables_keep_the_asked_compression(tmp_path: Path) -> None:
    part = tmp_path / "part.parquet"
    frame = pl.DataFrame(
        {"feature_id": [3, 4], "field_id": ["101", "205"]},
        schema={"feature_id": pl.Int32, "field_id": pl.String},
    )
    write_frame(frame, "feature", part, "zstd")
    row_group = pq.ParquetFile(part).metadata.row_group(0)
    assert {row_group.column(i).compression for i in range(2)} == {"ZSTD"}


@pytest.mark.parametrize("chunk_bytes", [1, 50, 4096 + 3, 10**6])
def test_planner_hands_chunks_over_in_shared_slots(tmp_path: Path, chunk_bytes: int) -> None:
    """Chunks the planner read into a slot are the file's bytes; a chunk whose line outgrew
    the read (shorter chunks than a line) comes without, and its worker reads it."""
    rows = [f"{i},{i % 2},0,{'a' * (i % 97)}\n".encode() for i in range(3000)]
    path = tmp_path / "sample_skeleton_train.csv"
    data = b"".join(rows) + b"9,1,0,no newline at the end"
    path.write_bytes(data)
    slots = SharedSlots(3, chunk_bytes)
    if not slots.available:
        pytest.skip("no memfd or /proc here")
    seen = b""
    for spec, handle in plan_chunks(RawSource(str(path)), "train", "skeleton", chunk_bytes, slots):
        expected = data[spec.start : spec.start + spec.length]
        assert (handle is not None) == (spec.length <= chunk_bytes)
        if handle is not None:
            assert isinstance(handle, SharedBytes) and handle.read() == expected
            slots.give_back(handle.slot)
        assert read_range(spec) == expected
        seen += expected
    assert seen == data
    slots.close()
