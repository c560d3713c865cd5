"""Checks after load: they pass on a sound database, and each one catches the damage it is for."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest
import yaml

from deepcvr.metadata import MetadataStore
from deepcvr.pipeline.config import build_pipeline
from deepcvr.pipeline.runner import run_pipeline
from deepcvr.quality import sources
from deepcvr.quality.checks import Bounds, Check, run_all
from deepcvr.quality.sources import (
    accounting_from_store,
    accounting_rows,
    count_noclick_conversions,
    read_manifests,
)
from tests.quality.conftest import Loaded


def run(db: Path, loaded: Loaded, raw: Path | None = None, **bounds: int) -> dict[str, Check]:
    rows = accounting_rows(read_manifests(loaded.parquet), {})
    with duckdb.connect(str(db), read_only=True) as con:
        checks, _table = run_all(con, rows, Bounds(**bounds), raw)
    return {c.name: c for c in checks}


def failed(checks: dict[str, Check]) -> set[str]:
    return {name for name, c in checks.items() if c.status == "FAIL"}


def tampered(loaded: Loaded, tmp_path: Path, *sql: str) -> Path:
    db = tmp_path / "tampered.duckdb"
    shutil.copyfile(loaded.db, db)
    with duckdb.connect(str(db)) as con:
        for statement in sql:
            con.execute(statement)
    return db


def test_corpus_passes_and_rejects_explain_every_gap(corpus: Loaded) -> None:
    checks = run(corpus.db, corpus, corpus.raw)
    assert failed(checks) == set()
    assert {n for n, c in checks.items() if c.status == "warn"} == {
        "train: CTR",  # 12 impressions: too few to enforce a rate
        "train: CVR",
        "train: click 0, conversion 1",  # kept and flagged, so it shows
    }
    features = checks["train: sample_feature rows vs declared feature_num"].values
    # declared 31 - loaded 22 = 6 rejected structures + 3 missing on the flagged line 11
    assert features == {"declared": 31, "loaded": 22, "rejected": 6, "mismatch": 3}
    common = checks["train: common_feature rows vs declared feature_num"].values
    assert common == {"declared": 25, "loaded": 21, "rejected": 2, "mismatch": 2}
    assert checks["train: click 0, conversion 1 in raw"].values == {
        "raw": 2,
        "loaded": 1,
        "rejected": 1,
    }
    assert checks["train: accounting sample_skeleton_train.csv"].ok
    assert any(name.startswith("keys: sample_feature: foreign key") for name in checks)


def test_profile_database_passes_with_enforced_bounds(profile: Loaded) -> None:
    checks = run(profile.db, profile, profile.raw, min_impressions=1000, min_clicks=50)
    assert failed(checks) == set()
    assert checks["train: CTR"].level == "error" and checks["test: CVR"].level == "error"


def test_rates_out_of_bounds_fail(corpus: Loaded) -> None:
    checks = run(corpus.db, corpus, min_impressions=0, min_clicks=0)
    assert failed(checks) == {"train: CTR", "train: CVR"}
    assert "25.0000% outside [0.1000%, 20.0000%]" in checks["train: CTR"].detail


def test_lost_structures_fail_feature_counts_and_accounting(corpus: Loaded, tmp_path: Path) -> None:
    db = tampered(corpus, tmp_path, "DELETE FROM sample_feature WHERE sample_id = 1")
    assert failed(run(db, corpus)) == {
        "train: sample_feature rows vs declared feature_num",
        "train: accounting sample_skeleton_train.csv",
    }


def test_dropped_noclick_conversion_is_caught(corpus: Loaded, tmp_path: Path) -> None:
    db = tampered(
        corpus,
        tmp_path,
        "DELETE FROM sample_feature WHERE sample_id = 4",
        "DELETE FROM sample WHERE sample_id = 4",
    )
    checks = run(db, corpus, corpus.raw)
    assert "train: click 0, conversion 1 in raw" in failed(checks)
    assert checks["train: click 0, conversion 1 in raw"].detail == "raw 2 != loaded 0 + rejected 1"
    assert "train: accounting sample_skeleton_train.csv" in failed(checks)


def test_lost_reject_fails_accounting(corpus: Loaded, tmp_path: Path) -> None:
    db = tampered(corpus, tmp_path, "DELETE FROM rejects WHERE reason = 'bad_label'")
    assert failed(run(db, corpus)) == {"train: accounting sample_skeleton_train.csv"}


def test_raw_file_that_was_not_transformed_is_not_compared(corpus: Loaded, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(corpus.raw, raw)
    with (raw / "sample_skeleton_train.csv").open("ab") as f:
        f.write(b"\n99,0,1,x,1,205\x021\x031.0\n")
    check = run(corpus.db, corpus, raw)["train: click 0, conversion 1 in raw"]
    assert check.status == "warn" and "not the file that was transformed" in check.detail


def test_accounting_from_the_metadata_store(corpus: Loaded, tmp_path: Path) -> None:
    store = MetadataStore.for_workspace(tmp_path)
    store.start_run("r1", "p", None)
    store.record(
        "r1", "transform", "accounting", "train", corpus.summary["splits"]["train"]["accounting"]
    )
    rows = accounting_rows({}, accounting_from_store(store))
    assert [(r["split"], r["file"], r["source"]) for r in rows] == [("train", "*", "metadata")]
    with duckdb.connect(str(corpus.db), read_only=True) as con:
        checks, table = run_all(con, rows)
    assert [c.name for c in checks if "accounting" in c.name] == ["train: accounting *"]
    assert table[0]["ok"] and table[0]["db_rows"] == 12 + 6


def test_no_accounting_is_a_warning(corpus: Loaded) -> None:
    with duckdb.connect(str(corpus.db), read_only=True) as con:
        checks, _ = run_all(con, [])
    check = next(c for c in checks if c.name == "train: accounting")
    assert check.status == "warn"


@pytest.mark.parametrize("block", [1, 5, 7, 64, 1 << 20])
def test_noclick_conversion_count_across_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    monkeypatch.setattr(sources, "READ_BLOCK", block)
    path = tmp_path / "s.csv"
    path.write_bytes(b"1,0,1,a\n22,0,1,b\r\n3,1,1,c\n4,0,0,x\n,0,1,y\n5,0,1,\n6,0,1,last")
    assert count_noclick_conversions(path) == 5  # not "3,1,1" nor "4,0,0"; the last counts


PIPELINE = """
name: checks
workspace: {ws}
tasks:
  checks:
    op: quality.checks
    with: {{target: "{target}", parquet: "{parquet}", raw: "{raw}", min_impressions: {n}}}
"""


def test_op_records_every_check_and_fails_in_one_line(corpus: Loaded, tmp_path: Path) -> None:
    for n, status in ((1000, "succeeded"), (0, "failed")):
        text = PIPELINE.format(
            ws=tmp_path, target=corpus.target, parquet=corpus.parquet, raw=corpus.raw, n=n
        )
        pipeline = build_pipeline(yaml.safe_load(text), "checks.yaml")
        result = run_pipeline(pipeline, table=False)
        assert result.tasks["checks"].status == status
        store = MetadataStore.for_workspace(tmp_path, create=False)
        records = store.records(result.run_id, "quality_check")
        assert len(records) > 15
        assert {r["value"]["status"] for r in records} >= {"ok", "warn"}
    error = result.tasks["checks"].error or ""
    assert error.startswith("1 quality check(s) failed: train: CTR (25.0000% outside")
    assert "\n" not in error and result.tasks["checks"].exit_code == 1


def test_op_without_accounting_or_load_is_a_config_error(tmp_path: Path) -> None:
    text = "name: c\nworkspace: {ws}\ntasks:\n  checks: {{op: quality.checks}}\n"
    pipeline = build_pipeline(yaml.safe_load(text.format(ws=tmp_path)), "c.yaml")
    result = run_pipeline(pipeline, table=False)
    assert result.tasks["checks"].exit_code == 2
    assert "no successful load task" in (result.tasks["checks"].error or "")
