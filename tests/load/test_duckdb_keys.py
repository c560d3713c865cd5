"""DuckDB key proofs: each agrees with the exact GROUP BY / anti-join query it replaces."""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import polars as pl
import pytest

from deepcvr.errors import DataError
from deepcvr.load import duckdb_keys
from deepcvr.load.database import load
from deepcvr.load.duckdb_keys import duplicates_sql, proves_references, proves_unique
from deepcvr.schema import TABLES
from tests.load.test_duckdb import _with_extra_rows, parquet  # noqa: F401  (the module fixture)


@pytest.mark.parametrize("proof", ["bits", "groups"])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_uniqueness_proof_in_ranges_finds_a_duplicate_anywhere(
    where: str, proof: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if proof == "groups":
        monkeypatch.setattr(duckdb_keys, "unique_by_bits", lambda *args: None)
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE sf AS SELECT CASE WHEN i % 2 = 0 THEN 'train' ELSE 'test' END AS split, "
        "i // 10 AS sample_id, (i % 10)::SMALLINT AS position, 1 AS feature_id, 1.0 AS value "
        "FROM range(5000) t(i)"
    )
    table = TABLES["sample_feature"]
    # In ranges: 17 of 300 rows each (groups), or 10 of 50 sample ids x 10 positions (bits).
    assert proves_unique(con, table, "sf", max_rows=300, max_bits=500)
    sample_id = {"first": 0, "middle": 250, "last": 499}[where]
    con.execute(f"INSERT INTO sf SELECT * FROM sf WHERE sample_id = {sample_id} LIMIT 1")
    assert not proves_unique(con, table, "sf", max_rows=300, max_bits=500)
    assert not proves_unique(con, table, "sf")  # one range


def _duplicated_keys(
    con: duckdb.DuckDBPyConnection,
    name: str,
    key: tuple[str, str, str],
    lead_type: str,
    rows: list[tuple[object, ...]],
) -> int:
    """Fill a long table `name` keyed (split, lead, position) with `rows`; return how many keys
    repeat, by the exact GROUP BY the proofs stand in for."""
    split, lead, position = key
    con.execute(
        f"CREATE OR REPLACE TABLE {name} ({split} VARCHAR, {lead} {lead_type}, "
        f"{position} SMALLINT, feature_id INTEGER, value DOUBLE)"
    )
    con.executemany(f"INSERT INTO {name} VALUES (?, ?, ?, 1, 1.0)", rows)
    cols = ", ".join(key)
    return con.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM {name} GROUP BY {cols} HAVING count(*) > 1)"
    ).fetchone()[0]


def test_position_bitmask_proof_agrees_with_group_by() -> None:
    """The bitmask query is 0 exactly when the key is unique, across 64-position blocks,
    negative positions and equal positions under different lines or splits."""
    table = TABLES["common_feature"]
    sql = duplicates_sql(table, "cf").format(where="")
    assert "bit_or" in sql
    assert "hash(" in duplicates_sql(TABLES["field"], "f")
    con = duckdb.connect()
    rng = random.Random(7)
    verdicts = set()
    for _ in range(60):
        rows = {
            (rng.choice(["train", "test"]), f"{rng.randrange(3):016x}", rng.randrange(-70, 200))
            for _ in range(rng.randrange(1, 40))
        }
        rows_list = sorted(rows)
        if rng.random() < 0.5:  # repeat one key, sometimes across a block edge's neighbours
            rows_list.append(rng.choice(rows_list))
        exact = _duplicated_keys(
            con, "cf", ("split", "common_feature_index", "position"), "VARCHAR", rows_list
        )
        found = con.execute(sql).fetchone()[0]
        assert (found == 0) == (exact == 0), rows_list
        verdicts.add(exact == 0)
    assert verdicts == {True, False}


def test_bitstring_uniqueness_proof_agrees_with_group_by() -> None:
    """Set bits equal rows exactly when (split, sample_id, position) is unique: negative ids
    and positions, equal keys in different splits, in one range or many."""
    table = TABLES["sample_feature"]
    con = duckdb.connect()
    rng = random.Random(11)
    verdicts = set()
    for _ in range(60):
        rows = sorted(
            {
                (rng.choice(["train", "test"]), rng.randrange(-5, 40), rng.randrange(-3, 70))
                for _ in range(rng.randrange(1, 60))
            }
        )
        if rng.random() < 0.5:
            rows.append(rng.choice(rows))
        exact = _duplicated_keys(con, "sf", ("split", "sample_id", "position"), "BIGINT", rows)
        max_bits = rng.choice([100_000, 300, 80])  # one range, or several
        assert duckdb_keys.unique_by_bits(con, table, "sf", max_bits) == (exact == 0), rows
        verdicts.add(exact == 0)
    assert verdicts == {True, False}


def test_bitstring_uniqueness_proof_declines_other_keys() -> None:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE sf AS SELECT 'train' AS split, i * 1000 AS sample_id, "
        "0::SMALLINT AS position, 1 AS feature_id, 1.0 AS value FROM range(100) t(i)"
    )
    con.execute("CREATE TABLE f AS SELECT i AS feature_id, '101' AS field_id FROM range(9) t(i)")
    con.execute(
        "CREATE TABLE cf AS SELECT 'train' AS split, '0123456789abcdef' AS "
        "common_feature_index, 0::SMALLINT AS position, 1 AS feature_id, 1.0 AS value"
    )
    assert duckdb_keys.unique_by_bits(con, TABLES["feature"], "f", 1000) is None  # one column
    assert duckdb_keys.unique_by_bits(con, TABLES["common_feature"], "cf", 1000) is None  # text
    # Ids 0..99,000 at 1,000 bits per range: 100 range queries, more than the grouped proof costs.
    assert duckdb_keys.unique_by_bits(con, TABLES["sample_feature"], "sf", 1000) is None
    assert duckdb_keys.unique_by_bits(con, TABLES["sample_feature"], "sf", 10_000) is True
    assert proves_unique(con, TABLES["sample_feature"], "sf", max_bits=1000)  # grouped instead


def _orphans(con: duckdb.DuckDBPyConnection, child: str, parent: str, on: str) -> int:
    return con.execute(
        f"SELECT count(*) FROM {child} c WHERE NOT EXISTS (SELECT 1 FROM {parent} p WHERE {on})"
    ).fetchone()[0]


def test_bitstring_proof_agrees_with_the_anti_join() -> None:
    """Both kinds of integer foreign key: `feature_id` alone and (`split`, `sample_id`), with
    children outside the parents' range, in a split the parent lacks, or at the range's edges."""
    table = TABLES["sample_feature"]
    by_id = next(fk for fk in table.foreign_keys if fk.columns == ("feature_id",))
    by_sample = next(fk for fk in table.foreign_keys if fk.columns == ("split", "sample_id"))
    con = duckdb.connect()
    rng = random.Random(11)
    verdicts: dict[str, set[bool]] = {"id": set(), "sample": set()}
    for _ in range(80):
        parents = {(rng.choice(["train", "test"]), rng.randrange(1, 300)) for _ in range(20)}
        children = [
            (s, i) if rng.random() < 0.97 else (rng.choice(["train", "test"]), rng.randrange(600))
            for s, i in rng.choices(sorted(parents), k=rng.randrange(0, 60))
        ]
        con.execute("CREATE OR REPLACE TABLE s (split VARCHAR, sample_id BIGINT)")
        con.execute("CREATE OR REPLACE TABLE f (feature_id INTEGER)")
        con.execute(
            "CREATE OR REPLACE TABLE sf (split VARCHAR, sample_id BIGINT, position SMALLINT, "
            "feature_id INTEGER, value DOUBLE)"
        )
        con.executemany("INSERT INTO s VALUES (?, ?)", sorted(parents))
        con.executemany("INSERT INTO f VALUES (?)", [(i,) for _, i in sorted(parents)])
        if children:
            con.executemany(
                "INSERT INTO sf VALUES (?, ?, 0, ?, 1.0)", [(s, i, i) for s, i in children]
            )
        exact = _orphans(con, "sf", "f", "p.feature_id = c.feature_id")
        assert proves_references(con, table, by_id, "sf", "f") == (exact == 0), children
        verdicts["id"].add(exact == 0)
        exact = _orphans(con, "sf", "s", "p.split = c.split AND p.sample_id = c.sample_id")
        assert proves_references(con, table, by_sample, "sf", "s") == (exact == 0), children
        verdicts["sample"].add(exact == 0)
    assert verdicts == {"id": {True, False}, "sample": {True, False}}


def test_bitstring_proof_declines_what_it_cannot_prove(monkeypatch: pytest.MonkeyPatch) -> None:
    """A text key, an id range too wide for a bitstring, or an empty parent: False, so the
    exact anti-join decides; no child rows: nothing to prove."""
    table = TABLES["sample_feature"]
    by_id = next(fk for fk in table.foreign_keys if fk.columns == ("feature_id",))
    con = duckdb.connect()
    con.execute("CREATE TABLE f (feature_id INTEGER)")
    con.execute("CREATE TABLE sf (split VARCHAR, sample_id BIGINT, feature_id INTEGER)")
    assert proves_references(con, table, by_id, "sf", "f")  # no rows at all
    con.execute("INSERT INTO sf VALUES ('train', 1, 5)")
    assert not proves_references(con, table, by_id, "sf", "f")  # no parents
    con.execute("INSERT INTO f SELECT range FROM range(1, 100)")
    assert proves_references(con, table, by_id, "sf", "f")
    monkeypatch.setattr(duckdb_keys, "BITSTRING_MAX_BITS", 50)
    assert not proves_references(con, table, by_id, "sf", "f")
    common = TABLES["common_feature"]
    by_group = next(fk for fk in common.foreign_keys if fk.ref_table == "common_feature_group")
    assert not proves_references(con, common, by_group, "cf", "cfg")  # text: not even queried


@pytest.mark.parametrize("enforce_max", [10**9, 0])
def test_an_orphan_feature_id_fails_the_load_enforced_or_not(
    parquet: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
    enforce_max: int,
) -> None:
    """Unenforced, the bitstring proof fails and the anti-join counts the orphan."""
    row = pl.read_parquet(parquet[1] / "test" / "sample_feature" / "*.parquet").head(1)
    row = row.with_columns(position=pl.lit(900, pl.Int16), feature_id=pl.lit(2**30, pl.Int32))
    broken = _with_extra_rows(parquet[1], tmp_path / "orphan", "test/sample_feature", row)
    expected = (
        r"sample_feature: .*foreign key"
        if enforce_max
        else r"sample_feature: foreign key \(feature_id\) -> feature: 1 rows without a parent"
    )
    db = tmp_path / "d.duckdb"
    with pytest.raises(DataError, match=expected):
        load(broken, f"duckdb:///{db}", enforce_keys_max_rows=enforce_max)
    assert not db.exists()
