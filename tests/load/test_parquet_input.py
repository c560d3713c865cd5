"""The Parquet input of a load: which parts' `split` column the footers prove constant, and a
DuckDB load that selects that constant gives the same rows as reading the column."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepcvr.load.database import load
from deepcvr.load.parquet_input import constant_split, inspect_parquet
from deepcvr.schema import TABLES
from deepcvr.transform.chunks import write_frame
from tests.load.test_duckdb import parquet  # noqa: F401  (the module fixture)
from tests.transform.test_chunks import _sample_features


def _footer(path: Path) -> pq.FileMetaData:
    return pq.ParquetFile(path).metadata


def test_a_part_written_by_the_transform_proves_its_split(tmp_path: Path) -> None:
    path = tmp_path / "part.parquet"
    write_frame(_sample_features(["test"] * 5), "sample_feature", path, "snappy")
    assert constant_split(_footer(path)) == "test"


@pytest.mark.parametrize(
    "case", ["mixed", "null", "no statistics", "groups disagree", "no split column", "no split"]
)
def test_a_split_the_footer_cannot_prove_is_none(tmp_path: Path, case: str) -> None:
    path = tmp_path / "part.parquet"
    splits: list[str | None] = ["train"] * 4
    if case == "mixed":
        splits[2] = "test"
    if case == "null":
        splits[2] = None
    if case == "no split":  # constant, but not a split's name: the load reads it (and fails)
        splits = ["valid"] * 4
    table = _sample_features(splits).to_arrow()
    if case == "no split column":
        table = table.drop(["split"])
    if case == "groups disagree":  # each row group is constant, the file is not
        halves = [_sample_features([split] * 2).to_arrow() for split in ("train", "test")]
        table = pa.concat_tables(halves)
    pq.write_table(table, path, row_group_size=2, write_statistics=case != "no statistics")
    assert constant_split(_footer(path)) is None


def _contents(db: Path, table: str) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
    finally:
        con.close()


def test_parts_without_a_proof_load_their_own_splits(
    parquet: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    """One train part holds rows of both splits and another has no statistics: the load reads
    their column, and the tables equal those of the untouched input."""
    out = tmp_path / "parquet"
    shutil.copytree(parquet[1], out)
    train_parts = sorted((out / "train" / "sample_feature").glob("*.parquet"))
    test_parts = sorted((out / "test" / "sample_feature").glob("*.parquet"))
    mixed = pa.concat_tables([pq.read_table(train_parts[0]), pq.read_table(test_parts[0])])
    pq.write_table(mixed, train_parts[0])
    test_parts[0].unlink()
    pq.write_table(pq.read_table(train_parts[1]), train_parts[1], write_statistics=False)
    parts = inspect_parquet(out).tables["sample_feature"]
    assert train_parts[0] not in parts.split_of and train_parts[1] not in parts.split_of
    assert parts.split_of[train_parts[2]] == "train"

    expected, got = tmp_path / "expected.duckdb", tmp_path / "got.duckdb"
    load(parquet[1], f"duckdb:///{expected}")
    summary = load(out, f"duckdb:///{got}")
    assert {c["ok"] for c in summary["checks"]} == {True}
    for table in ("sample_feature", "common_feature", "sample"):
        assert "split" in TABLES[table].column_names
        assert _contents(got, table) == _contents(expected, table)
