"""The Spark engine: the same six tables and rejects as the local engine, row for row."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from deepcvr.errors import DataError
from deepcvr.synth import generate
from deepcvr.transform import parse as P
from deepcvr.transform.engine import TransformOptions, transform
from deepcvr.transform.parse import SCHEMAS
from tests.transform.test_engine import KEYS, TABLES

pytestmark = pytest.mark.spark

ALL_REASONS = {
    P.INVALID_UTF8,
    P.TRUNCATED_LAST_LINE,
    P.WRONG_COLUMN_COUNT,
    P.BAD_SAMPLE_ID,
    P.BAD_LABEL,
    P.LABEL_OUT_OF_RANGE,
    P.BAD_COMMON_INDEX,
    P.BAD_FEATURE_NUM,
    P.EMPTY_FEATURE_LIST,
    P.TOO_MANY_STRUCTURES,
    P.DUPLICATE_SAMPLE_ID,
    P.DUPLICATE_COMMON_INDEX,
    P.ORPHAN_COMMON_INDEX,
    P.FEATURE_NUM_MISMATCH,
    P.MALFORMED_STRUCTURE,
    P.UNKNOWN_FIELD,
    P.BAD_FEATURE_ID,
    P.BAD_VALUE,
    P.FEATURE_FIELD_CONFLICT,
}
IDX = "ffffffffffffff"  # prefix of the hand-written common indexes (after the generated ones)
NEW = 20_000_000  # feature ids above the generator's id space, so conflicts are controlled


def read_tables(out: Path, split: str) -> dict[str, pl.DataFrame]:
    frames = {}
    for table in TABLES:
        files = sorted((out / split / table).glob("*.parquet"))
        frames[table] = pl.concat([pl.read_parquet(f) for f in files]) if files else None
    return frames


def _bad_common(first_index: str) -> bytes:
    s = lambda f, i, v="1.0": f"{f}\x02{i}\x03{v}"  # noqa: E731
    lines = [
        f"{first_index},1,{s(101, NEW + 1)}",  # duplicate index, far from the first
        f"XYZ,1,{s(101, 1)}",  # bad index
        # Repeated fields (110_14 twice) and a feature id that the skeleton uses under 205.
        f"{IDX}01,4,{s(101, NEW + 2)}\x01{s('110_14', NEW + 3, '0.69315')}\x01"
        f"{s('110_14', NEW + 4, '1.09861')}\x01{s(124, NEW + 5)}",
        f"{IDX}02,2,{s(101, NEW + 6)}\x01{s(124, NEW + 5)}\r",  # CRLF, kept
        f"{IDX}03,x,{s(101, 1)}",  # bad feature_num
        f"{IDX}04,0,",  # empty feature list
        f"{IDX}05,5,{s(101, NEW + 7)}",  # declared 5, found 1: flagged, kept
        f"{IDX}06,1",  # wrong column count
        # Structure rejects, and values Polars and Spark must parse alike.
        f"{IDX}07,20,"
        + "\x01".join(
            [
                s(999, 1),  # unknown field
                s(101, -5),  # bad feature id
                s(101, NEW + 8, "abc"),  # bad value
                "garbage",  # malformed
                s(101, NEW + 9, "1e400"),  # infinite: bad value
                s(101, f"+{NEW + 10}", ".5"),  # both parse
                s(101, f" {NEW + 11}"),  # Spark would trim: bad feature id
                s(101, NEW + 12, "1.0d"),  # Java suffix: bad value
                s(101, NEW + 13, "5."),
                s(101, NEW + 14, "-1.5e-3"),
                s(101, "2147483648"),  # int32 overflow: bad feature id
                "101\x02\x031.0",  # empty id: malformed
                s(101, NEW + 17, "0x1p3"),  # a hex float Java reads: bad value
                s(101, NEW + 18, "NaN"),
                s(101, NEW + 19, "5.e3"),  # both read 5000
                s(101, NEW + 20, "."),
                s(101, f"{NEW + 21}\x7f"),  # Spark trims DEL from ints: bad id
                s(101, NEW + 22, "1e5f"),
                "101 \x02" + f"{NEW + 23}\x031.0",  # a space in the field: unknown field
                "101\x02" + f"{NEW + 24}\x031.0\x03",  # two value separators: malformed
            ]
        ),
        f"{IDX}08,{P.MAX_POSITION + 2}," + "\x01".join([s(101, 1)] * (P.MAX_POSITION + 2)),
        f"{IDX}0a,1,{s(101, NEW + 15)}",  # kept; a skeleton line points here
        f"{IDX}0b,1,205",  # one token, no separator: one malformed structure
        f"{IDX}0c,2,abc",  # the same, and flagged (declared 2)
        f"{IDX}0d,1,{s('1é1', NEW + 16)}",  # non-ASCII: unknown field
        # Doubled and trailing item separators: four structures, two of them empty.
        f"{IDX}0e,4,{s(101, NEW + 31)}\x01\x01{s(101, NEW + 32)}\x01",
    ]
    data = "".join(line + "\n" for line in lines).encode()
    return data + f"{IDX}09,1,{s(101, 1)}".encode() + b"\xff\xfe\n"  # invalid UTF-8


def _bad_skeleton(first_index: str) -> bytes:
    s = lambda f, i, v="1.0": f"{f}\x02{i}\x03{v}"  # noqa: E731
    ok = f"{IDX}0a"
    lines = [
        f"1,0,0,{first_index},1,{s(205, NEW + 20)}",  # duplicate sample id 1
        f"999990,0,0,aaaaaaaaaaaaaaaa,1,{s(205, NEW + 20)}",  # orphan
        f"999989,0,0,{IDX}03,1,{s(205, NEW + 20)}",  # orphan: its common line was rejected
        f"0,0,0,{ok},1,{s(205, NEW + 20)}",  # bad sample id
        f"abc,0,0,{ok},1,{s(205, NEW + 20)}",
        f" 7,0,0,{ok},1,{s(205, NEW + 20)}",  # Spark would trim: bad sample id
        f"999988,x,0,{ok},1,{s(205, NEW + 20)}",  # bad label
        f"999987,2,0,{ok},1,{s(205, NEW + 20)}",  # label out of range
        # Conflict with the common file (NEW+2 is field 101 there), and inside the skeleton.
        f"999986,1,0,{ok},2,{s(205, NEW + 2)}\x01{s(206, NEW + 21)}",
        f"999985,0,0,{ok},1,{s(207, NEW + 21)}",
        f"999984,0,0,{ok},1,{s(205, NEW + 20)}\r",  # CRLF
        f"999983,0,0,{ok},3,{s(210, NEW + 22)}\x01{s(210, NEW + 23)}\x01{s(210, NEW + 24)}",
        f"999982,0,0,{ok},3,{s(205, NEW + 25)}",  # flagged
        "bad line",
        "",
        f"999980,0,1,{ok},1,{s(301, NEW + 26)}",  # (0,1) is kept
        f"999980,1,1,{ok},1,{s(301, NEW + 26)}",  # duplicate of the line above
        f"+999979,0,0,{ok},1,{s(301, NEW + 26)}",  # '+' accepted by both parsers
        f"999978,0,0,{ok},1,abc,def",  # wrong column count
        # Wrong column count with structures before the extra comma: they all count.
        f"999973,0,0,{ok},2,{s(205, NEW + 20)}\x01{s(206, NEW + 21)},x",
        f"999972,1 ,0,{ok},1,{s(205, NEW + 20)}",  # Spark would trim the label: bad label
        f"999971,0,0,{ok},1 ,{s(205, NEW + 20)}",  # and the count: bad feature_num
        "999975,0,0,nothex,1,abc",  # bad index; its lone token counts as a structure
        f"999974,0,0,{ok},1,{s('2é6', NEW + 28)}",  # non-ASCII
    ]
    data = "".join(line + "\n" for line in lines).encode()
    data += f"999977,0,0,{ok},1,{s(205, NEW + 20)}".encode() + b"\xc3\r\n"  # invalid + CRLF
    return data + f"999976,0,0,{ok},1,{s(205, NEW + 27)}".encode()  # no final newline


def _bad_test_split(first_index: str) -> bytes:
    # NEW+1 is field 101 in train (common line 1 is a duplicate, so not there): NEW+2 is.
    return (
        f"888888,0,0,{first_index},1,206\x02{NEW + 2}\x031.0\n"  # train decided: 101 wins
        f"888887,0,0,{first_index},1,216\x02{NEW + 30}\x031.0\n"
        "bad line\n"
    ).encode()


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two generated splits with bad lines appended: every reject reason of parse.py."""
    d = tmp_path_factory.mktemp("raw")
    generate(d / "train", 2000, "train", seed=7)
    generate(d / "test", 300, "test", seed=8)
    for split, bad_common, bad_skeleton in [
        ("train", _bad_common, _bad_skeleton),
        ("test", None, _bad_test_split),
    ]:
        common = d / split / f"common_features_{split}.csv"
        first_index = common.read_text().split(",", 1)[0]
        if bad_common is not None:
            with common.open("ab") as f:
                f.write(bad_common(first_index))
        with (d / split / f"sample_skeleton_{split}.csv").open("ab") as f:
            f.write(bad_skeleton(first_index))
    return d


@pytest.fixture(scope="module")
def local_out(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local")
    transform(raw, out, None, TransformOptions(workers=1, max_reject_ratio=1.0))
    return out


def _run(spark: Any, raw: Path, out: Path, **kw: Any) -> dict[str, Any]:
    from deepcvr.transform.spark_engine import location, spark_transform

    kw.setdefault("max_reject_ratio", 1.0)
    return spark_transform(spark, location(raw), location(out), **kw)


@pytest.fixture(scope="module")
def spark_out(spark: Any, raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("spark")
    _run(spark, raw, out)
    return out


def assert_same_tables(local: Path, spark: Path, split: str) -> dict[str, pl.DataFrame]:
    ours, theirs = read_tables(spark, split), read_tables(local, split)
    for table in TABLES:
        expected = theirs[table]
        got = ours[table]
        assert got is not None, table
        if expected is None:  # the local engine writes no file for an empty rejects table
            assert got.is_empty(), table
            continue
        assert got.columns == expected.columns, table
        got = got.cast(dict(expected.schema)).sort(KEYS[table])  # type: ignore[arg-type]
        expected = expected.sort(KEYS[table])
        assert got.schema == expected.schema, table
        if not got.equals(expected):
            diff = pl.concat(
                [
                    got.join(expected, on=got.columns, how="anti").with_columns(
                        side=pl.lit("spark")
                    ),
                    expected.join(got, on=got.columns, how="anti").with_columns(
                        side=pl.lit("local")
                    ),
                ]
            )
            pytest.fail(f"{split}/{table}: {got.height} vs {expected.height} rows; differ:\n{diff}")
    return ours


def test_spark_tables_equal_local_engine_row_for_row(local_out: Path, spark_out: Path) -> None:
    for split in ("train", "test"):
        frames = assert_same_tables(local_out, spark_out, split)
        assert frames["sample"].height > 0 and frames["rejects"] is not None
    # Every reject reason of parse.py shows up in train.
    reasons = set(read_tables(spark_out, "train")["rejects"]["reason"])  # type: ignore[index]
    assert reasons == ALL_REASONS, ALL_REASONS ^ reasons
    test_rejects = read_tables(spark_out, "test")["rejects"]
    assert test_rejects is not None
    assert test_rejects.filter(pl.col("reason") == P.FEATURE_FIELD_CONFLICT)[
        "detail"
    ].to_list() == [f"feature {NEW + 2} belongs to field 101"]
    field = pl.read_parquet(spark_out / "field" / "*.parquet")
    assert field.equals(pl.read_parquet(local_out / "field" / "*.parquet"))


def test_manifest_accounting_equals_local(local_out: Path, spark_out: Path) -> None:
    for split in ("train", "test"):
        ours = json.loads((spark_out / split / "_manifest.json").read_text())
        theirs = json.loads((local_out / split / "_manifest.json").read_text())
        assert ours["accounting"] == theirs["accounting"]
        assert ours["rejects"] == theirs["rejects"]
        assert ours["reject_ratio"] == theirs["reject_ratio"]
        for name, info in ours["files"].items():
            assert all(info["checks"].values()), (name, info["checks"])
            assert {k: v for k, v in info.items() if k != "checks"} == {
                k: v for k, v in theirs["files"][name].items() if k != "checks"
            }
    acc = ours["accounting"]
    assert acc["lines"] == acc["loaded_lines"] + acc["rejected_lines"]


def _parquet_types(path: Path) -> list[tuple[str, str, str]]:
    import pyarrow.parquet as pq

    schema = pq.ParquetFile(path).schema
    return [(c.name, c.physical_type, str(c.logical_type)) for c in schema]


def test_schema_is_the_local_engines(spark_out: Path, local_out: Path) -> None:
    """Same columns, physical and logical Parquet types. (Spark marks never-null columns
    REQUIRED where Polars writes OPTIONAL; DuckDB, PyArrow and Polars read a mix alike.)"""
    for table in (*TABLES, "field"):
        where = "" if table == "field" else "train"
        ours = next((spark_out / where / table).glob("*.parquet"))
        theirs = next((local_out / where / table).glob("*.parquet"))
        assert _parquet_types(ours) == _parquet_types(theirs), table
    assert (
        dict(pl.read_parquet_schema(next((spark_out / "train" / "rejects").glob("*.parquet"))))
        == (SCHEMAS["rejects"])
    )


def test_loader_reads_spark_output_unchanged(spark_out: Path, tmp_path: Path) -> None:
    from deepcvr.load.database import load

    summary = load(spark_out, f"duckdb:///{tmp_path / 'db.duckdb'}")
    assert all(c["ok"] for c in summary["checks"])
    for table, info in summary["tables"].items():
        if table != "feature":  # one table for both splits: ids shared by them count once
            assert info["rows"] == info["parquet_rows"], table
    assert summary["tables"]["sample"]["rows"] > 2000


def test_many_blocks_and_a_byte_order_mark(spark: Any, raw: Path, tmp_path: Path) -> None:
    """Small input splits (many blocks per file) and a BOM that Hadoop's reader drops."""
    d = tmp_path / "raw"
    shutil.copytree(raw / "train", d)
    common = d / "common_features_train.csv"
    common.write_bytes(b"\xef\xbb\xbf" + common.read_bytes())
    local = tmp_path / "local"
    transform(d, local, None, TransformOptions(workers=1, max_reject_ratio=1.0))
    spark.conf.set("spark.sql.files.maxPartitionBytes", "65536")
    try:
        summary = _run(spark, d, tmp_path / "spark")
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    assert summary["splits"]["train"]["chunks"] > 10
    frames = assert_same_tables(local, tmp_path / "spark", "train")
    first = frames["rejects"].filter(pl.col("line") == 1)  # type: ignore[union-attr]
    assert first["reason"].to_list() == [P.BAD_COMMON_INDEX]
    assert first["raw"][0].startswith("\ufeff")


def test_non_ascii_line_loses_its_terminator(spark: Any, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    idx = "0123456789abcdef"
    (raw / "common_features_train.csv").write_text(f"{idx},1,101\x027\x031.0\r\n")
    (raw / "sample_skeleton_train.csv").write_text(
        f"1,0,0,{idx},1,205\x028\x031.0\n2,0,0,{idx},1,2é6\x029\x031.0\r\n"
    )
    out = tmp_path / "out"
    _run(spark, raw, out)
    rejects = read_tables(out, "train")["rejects"]
    assert rejects is not None
    assert rejects.select("line", "byte_offset", "reason", "raw").rows() == [
        (2, 35, P.UNKNOWN_FIELD, "2é6\x029\x031.0")
    ]


def test_reject_ratio_fails_after_writing_rejects(spark: Any, raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"lines rejected .* see .*rejects") as err:
        _run(spark, raw, out, splits=["test"], max_reject_ratio=0.0)
    assert "\n" not in str(err.value)
    assert list((out / "test" / "rejects").glob("*.parquet"))
    assert not (out / "test" / "_manifest.json").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]


def test_missing_raw_files_is_one_line_error(spark: Any, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no raw files") as err:
        _run(spark, tmp_path, tmp_path / "out", splits=["test"])
    assert "\n" not in str(err.value)


def test_pipeline_op_with_spark_settings(spark: Any, raw: Path, tmp_path: Path) -> None:
    """`transform.aliccp` with `engine: spark` runs through the op (the session is reused)."""
    from deepcvr.pipeline.ops import OpContext
    from deepcvr.transform.engine import run_transform
    from deepcvr.transform.ops import TransformParams

    params = TransformParams(
        input=str(raw),
        output=str(tmp_path / "out"),
        split=["test"],
        engine="spark",
        max_reject_ratio=1.0,
        spark={"spark.master": "local[2]", "spark.sql.shuffle.partitions": "3"},
    )
    ctx = OpContext(workspace=tmp_path, run_id="r", task="transform")
    summary = run_transform(ctx, params)
    assert summary["engine"] == "spark" and list(summary["splits"]) == ["test"]
    assert (tmp_path / "out" / "test" / "_manifest.json").exists()
    assert spark.conf.get("spark.sql.shuffle.partitions") == "3"
    spark.conf.set("spark.sql.shuffle.partitions", "4")


def test_a_later_split_keeps_the_decisions_of_a_finished_one(
    spark: Any, raw: Path, local_out: Path, tmp_path: Path
) -> None:
    """Test transformed alone after train: train's feature table decides, as in one run."""
    out = tmp_path / "out"
    _run(spark, raw, out, splits=["train"])
    _run(spark, raw, out, splits=["test"])
    assert_same_tables(local_out, out, "test")
