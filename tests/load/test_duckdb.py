"""DuckDB target: keys and foreign keys in place, rebuilt raw lines match, atomic and idempotent."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest

from deepcvr.errors import DataError, TargetError
from deepcvr.load.database import load
from deepcvr.schema import TABLES, create_table_sql
from deepcvr.synth import generate
from deepcvr.transform.engine import TransformOptions, transform
from tests.helpers import REAL_COMMON, read_raw, rebuild


@pytest.fixture(scope="module")
def parquet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    raw = tmp_path_factory.mktemp("raw")
    for split, seed in (("train", 3), ("test", 4)):
        generate(raw / split, 2500, split, seed=seed)
    out = tmp_path_factory.mktemp("parquet")
    transform(raw, out, None, TransformOptions(workers=2, chunk_bytes=200_000))
    return raw, out


def test_every_raw_line_is_rebuilt_exactly(parquet: tuple[Path, Path], tmp_path: Path) -> None:
    raw, out = parquet
    db = tmp_path / "d.duckdb"
    summary = load(out, f"duckdb:///{db}")
    assert {c["ok"] for c in summary["checks"]} == {True}
    con = duckdb.connect(str(db), read_only=True)
    for split in ("train", "test"):
        for kind, name in (("skeleton", "sample_skeleton"), ("common", "common_features")):
            lines = read_raw(raw / split / f"{name}_{split}.csv", kind)
            rebuilt = rebuild(con, split, kind)
            assert rebuilt == {k: v for k, (_, v) in lines.items()}
        n = con.execute("SELECT sum(num_features) FROM sample WHERE split = ?", [split]).fetchone()
        m = con.execute("SELECT count(*) FROM sample_feature WHERE split = ?", [split]).fetchone()
        assert n == m


def test_keys_and_foreign_keys_exist(parquet: tuple[Path, Path], tmp_path: Path) -> None:
    db = tmp_path / "d.duckdb"
    load(parquet[1], f"duckdb:///{db}")
    con = duckdb.connect(str(db), read_only=True)
    constraints = con.execute(
        "SELECT table_name, constraint_type, constraint_column_names::VARCHAR[] "
        "FROM duckdb_constraints() WHERE constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY')"
    ).fetchall()
    names = {(t, k, tuple(c)) for t, k, c in constraints}
    assert ("sample_feature", "PRIMARY KEY", ("split", "sample_id", "position")) in names
    assert ("sample_feature", "FOREIGN KEY", ("split", "sample_id")) in names
    assert ("sample_feature", "FOREIGN KEY", ("feature_id",)) in names
    assert ("common_feature", "FOREIGN KEY", ("split", "common_feature_index")) in names
    assert ("sample", "FOREIGN KEY", ("split", "common_feature_index")) in names
    assert ("feature", "FOREIGN KEY", ("field_id",)) in names
    with pytest.raises(duckdb.ConstraintException):
        con.close()
        con = duckdb.connect(str(db))
        con.execute("INSERT INTO sample_feature VALUES ('train', 987654321, 0, 1, 1.0)")


def test_numeric_columns_are_stored_with_the_named_compression(tmp_path: Path) -> None:
    """The schema names DuckDB's compression for numbers and the split, so DuckDB runs no
    trials per segment: long runs, which it would store as RLE left to itself (and the
    alternating split as bitpacking), are stored with the named methods, and a column the
    schema says comes in runs is stored as RLE whatever its values."""
    con = duckdb.connect(str(tmp_path / "d.duckdb"))
    con.execute(create_table_sql(TABLES["sample_feature"], "duckdb"))
    con.execute(
        "INSERT INTO sample_feature SELECT CASE WHEN i % 2 = 0 THEN 'train' ELSE 'test' END, "
        "i, (i // 7000) % 3, i // 4000, ((i // 3000) % 2)::DOUBLE FROM range(300000) t(i)"
    )
    con.execute("CHECKPOINT")
    used = dict(
        con.execute(
            "SELECT column_name, list(DISTINCT lower(compression)) FROM "
            "pragma_storage_info('sample_feature') WHERE segment_type <> 'VALIDITY' GROUP BY 1"
        ).fetchall()
    )
    assert used == {
        "split": ["rle"],
        "sample_id": ["rle"],  # no runs here, but the schema says it comes in runs
        "position": ["bitpacking"],
        "feature_id": ["bitpacking"],
        "value": ["alp"],
    }
    assert "COMPRESSION" not in create_table_sql(TABLES["sample_feature"], "mysql")


def test_large_tables_get_keys_verified_by_query(
    parquet: tuple[Path, Path], tmp_path: Path
) -> None:
    db = tmp_path / "d.duckdb"
    summary = load(parquet[1], f"duckdb:///{db}", enforce_keys_max_rows=1000)
    assert summary["tables"]["sample_feature"]["keys"] == "verified by queries"
    assert summary["tables"]["field"]["keys"] == "enforced"
    con = duckdb.connect(str(db), read_only=True)
    keys = con.execute(
        "SELECT table_name, kind, enforced, violations FROM deepcvr_keys "
        "WHERE table_name = 'sample_feature'"
    ).fetchall()
    assert ("sample_feature", "PRIMARY KEY", False, 0) in keys


def test_idempotent_and_keeps_other_split(parquet: tuple[Path, Path], tmp_path: Path) -> None:
    _raw, out = parquet
    db = tmp_path / "d.duckdb"
    only_train = tmp_path / "train_only"
    shutil.copytree(out, only_train, ignore=shutil.ignore_patterns("test"))
    only_test = tmp_path / "test_only"
    shutil.copytree(out, only_test, ignore=shutil.ignore_patterns("train"))
    load(only_train, f"duckdb:///{db}")
    load(only_test, f"duckdb:///{db}")
    twice = load(only_test, f"duckdb:///{db}")
    both = tmp_path / "both.duckdb"
    once = load(out, f"duckdb:///{both}")
    assert {t: i["rows"] for t, i in twice["tables"].items()} == {
        t: i["rows"] for t, i in once["tables"].items()
    }


def test_failed_load_leaves_previous_database(parquet: tuple[Path, Path], tmp_path: Path) -> None:
    db = tmp_path / "d.duckdb"
    load(parquet[1], f"duckdb:///{db}")
    before = db.read_bytes()
    broken = tmp_path / "broken"
    shutil.copytree(parquet[1], broken)
    shutil.rmtree(broken / "train" / "sample")
    with pytest.raises(DataError, match="table sample is missing"):
        load(broken, f"duckdb:///{db}")
    assert db.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def test_memory_is_held_to_the_limit_with_spill_space_beside_the_target(
    parquet: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deepcvr.load import duckdb_target

    seen: list[tuple[str, str]] = []
    build = duckdb_target._build

    def spy(con: duckdb.DuckDBPyConnection, *args: object) -> object:
        limit, spill = con.execute(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
        ).fetchone()
        seen.append((limit, spill))
        Path(spill).mkdir()  # as DuckDB makes it when an operator spills
        (Path(spill) / "duckdb_temp_block-1.block").write_bytes(b"x" * 4096)
        return build(con, *args)

    monkeypatch.setattr(duckdb_target, "_build", spy)
    db = tmp_path / "d.duckdb"
    summary = load(parquet[1], f"duckdb:///{db}", memory_mb=96)
    expected = (
        duckdb.connect(config={"memory_limit": "96MB"})
        .execute("SELECT current_setting('memory_limit')")
        .fetchone()
    )
    assert [limit for limit, _ in seen] == [expected[0]]
    spill = Path(seen[0][1])
    assert spill.parent == tmp_path and spill.name.startswith(".tmp-d.duckdb.")
    assert summary["memory_mb"] == 96 and {c["ok"] for c in summary["checks"]} == {True}
    assert [p.name for p in tmp_path.iterdir()] == ["d.duckdb"]  # spill space gone with the rest


def test_too_little_memory_is_a_one_line_error_naming_the_setting(
    parquet: tuple[Path, Path], tmp_path: Path
) -> None:
    db = tmp_path / "d.duckdb"
    load(parquet[1], f"duckdb:///{db}")
    before = db.read_bytes()
    with pytest.raises(TargetError, match=r"Out of Memory.*; raise memory_mb \(now 4\)") as err:
        load(parquet[1], f"duckdb:///{db}", memory_mb=4)
    assert "\n" not in str(err.value) and "Possible solutions" not in str(err.value)
    assert db.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d.duckdb"]


def test_unwritable_target_is_one_line_error(parquet: tuple[Path, Path], tmp_path: Path) -> None:
    target = tmp_path / "dir.duckdb"
    target.mkdir()
    with pytest.raises(TargetError, match="is a directory"):
        load(parquet[1], f"duckdb:///{target}")
    (tmp_path / "ro").mkdir()
    blocker = tmp_path / "ro" / "file"
    blocker.write_text("")
    with pytest.raises(TargetError, match="cannot create"):
        load(parquet[1], f"duckdb:///{blocker}/sub/d.duckdb")


def test_real_fixture_round_trip(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(REAL_COMMON, raw / "common_features_train.csv")
    (raw / "sample_skeleton_train.csv").write_text(
        "1,1,0,84dceed2e3a667f8,2,205\x02123\x031.0\x01301\x029\x031.0\n"
        "2,0,0,0000350f0c2121e7,1,205\x02124\x031.0\n"
    )
    out = tmp_path / "out"
    transform(raw, out, None, TransformOptions(workers=1))
    db = tmp_path / "d.duckdb"
    load(out, f"duckdb:///{db}")
    con = duckdb.connect(str(db), read_only=True)
    expected = {k: v for k, (_, v) in read_raw(REAL_COMMON, "common").items()}
    assert rebuild(con, "train", "common") == expected


def _with_extra_rows(src: Path, dst: Path, table_dir: str, rows: pl.DataFrame) -> Path:
    shutil.copytree(src, dst)
    rows.write_parquet(dst / table_dir / "part-extra.parquet")
    return dst


@pytest.mark.parametrize("enforce_max", [10**9, 10])
def test_duplicate_key_fails_the_load_enforced_or_not(
    parquet: tuple[Path, Path], tmp_path: Path, enforce_max: int
) -> None:
    """Above the threshold the hash screen sees the duplicate and the exact query counts it."""
    first = pl.read_parquet(parquet[1] / "train" / "sample" / "*.parquet").head(1)
    broken = _with_extra_rows(parquet[1], tmp_path / "dup", "train/sample", first)
    db = tmp_path / "d.duckdb"
    load(parquet[1], f"duckdb:///{db}")
    before = db.read_bytes()
    expected = (
        r"sample: primary key \(split, sample_id\) = \('train', \d+\) is in 2 rows"
        if enforce_max > 10
        else "sample: primary key .* 1 duplicate keys"
    )
    with pytest.raises(DataError, match=expected):
        load(broken, f"duckdb:///{db}", enforce_keys_max_rows=enforce_max)
    assert db.read_bytes() == before


@pytest.mark.parametrize("enforce_max", [10**9, 10])
def test_feature_in_two_fields_across_splits_is_named(
    parquet: tuple[Path, Path], tmp_path: Path, enforce_max: int
) -> None:
    train = pl.read_parquet(parquet[1] / "train" / "feature" / "*.parquet").head(1)
    moved = train.with_columns(
        field_id=pl.when(pl.col("field_id") == "205").then(pl.lit("206")).otherwise(pl.lit("205"))
    )
    broken = _with_extra_rows(parquet[1], tmp_path / "clash", "test/feature", moved)
    with pytest.raises(DataError, match="belong to two fields across splits"):
        load(broken, f"duckdb:///{tmp_path / 'd.duckdb'}", enforce_keys_max_rows=enforce_max)


def test_features_are_counted_after_the_distinct_when_the_splits_overlap(
    parquet: tuple[Path, Path], tmp_path: Path
) -> None:
    """The splits share feature ids: with a threshold between the distinct count and the
    splits' rows together, `feature` is still enforced; one below it, proved by queries."""
    parts = pl.read_parquet(parquet[1] / "*" / "feature" / "*.parquet")
    distinct = parts.get_column("feature_id").n_unique()
    assert distinct < parts.height
    for threshold, keys in ((distinct, "enforced"), (distinct - 1, "verified by queries")):
        db = tmp_path / f"d{threshold}.duckdb"
        summary = load(parquet[1], f"duckdb:///{db}", enforce_keys_max_rows=threshold)
        assert summary["tables"]["feature"] == summary["tables"]["feature"] | {
            "rows": distinct,
            "keys": keys,
        }
        con = duckdb.connect(str(db), read_only=True)
        constraints = con.execute(
            "SELECT constraint_type FROM duckdb_constraints() WHERE table_name = 'feature' "
            "AND constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY') ORDER BY 1"
        ).fetchall()
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        con.close()
        enforced = [("FOREIGN KEY",), ("PRIMARY KEY",)] if keys == "enforced" else []
        assert constraints == enforced
        assert "feature__distinct" not in tables


def test_enforced_keys_are_trusted_and_the_rest_proved(
    parquet: tuple[Path, Path], tmp_path: Path
) -> None:
    rows = {
        t: i["rows"]
        for t, i in load(parquet[1], f"duckdb:///{tmp_path / 'a.duckdb'}")["tables"].items()
    }
    small = max(rows["sample"], rows["common_feature_group"])
    assert small < min(rows["sample_feature"], rows["common_feature"], rows["feature"])
    summary = load(parquet[1], f"duckdb:///{tmp_path / 'd.duckdb'}", enforce_keys_max_rows=small)
    details = {c["name"]: c["detail"] for c in summary["checks"]}
    assert details["sample: primary key (split, sample_id)"].startswith("enforced by")
    fk = "sample: foreign key (split, common_feature_index) -> common_feature_group"
    assert details[fk].startswith("enforced by")
    assert details["feature: primary key (feature_id)"] == "0 duplicate keys"
    assert summary["tables"]["sample_feature"]["keys"] == "verified by queries"
    fk = "sample_feature: foreign key (split, sample_id) -> sample"
    assert details[fk] == "0 rows without a parent"


@pytest.mark.parametrize("parts", [1, 3])
def test_enforced_foreign_keys_catch_an_orphan_in_parallel_inserts(
    parquet: tuple[Path, Path], tmp_path: Path, parts: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deepcvr.load import duckdb_target

    monkeypatch.setattr(duckdb_target, "_PARALLEL_INSERTS", parts)
    db = tmp_path / "d.duckdb"
    load(parquet[1], f"duckdb:///{db}")
    con = duckdb.connect(str(db), read_only=True)
    loaded = con.execute("SELECT * FROM sample ORDER BY split, sample_id").fetchall()
    features = con.execute("SELECT * FROM feature ORDER BY feature_id").fetchall()
    con.close()
    expected = pl.read_parquet(parquet[1] / "*" / "sample" / "*.parquet")
    assert loaded == expected.sort("split", "sample_id").rows()
    assert len(features) == len({f for f, _ in features})
    before = db.read_bytes()
    orphan = pl.read_parquet(parquet[1] / "train" / "sample" / "*.parquet").head(1)
    orphan = orphan.with_columns(
        sample_id=pl.lit(10**9, pl.Int64), common_feature_index=pl.lit("f" * 16)
    )
    broken = _with_extra_rows(parquet[1], tmp_path / "orphan", "train/sample", orphan)
    with pytest.raises(DataError, match=r"sample: .*foreign key"):
        load(broken, f"duckdb:///{db}")
    assert db.read_bytes() == before
    field = pl.read_parquet(parquet[1] / "train" / "feature" / "*.parquet").head(1)
    field = field.with_columns(feature_id=pl.lit(2**30, pl.Int32), field_id=pl.lit("999"))
    broken = _with_extra_rows(parquet[1], tmp_path / "field", "train/feature", field)
    with pytest.raises(DataError, match=r"feature: .*foreign key"):
        load(broken, f"duckdb:///{db}")
    assert db.read_bytes() == before
