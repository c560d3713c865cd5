"""The metadata store: WAL mode, runs and tasks recorded, records, assets, masking."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from deepcvr.errors import DeepCVRError
from deepcvr.metadata import SCHEMA_VERSION, MetadataStore, store_path


def test_store_is_wal_with_schema(tmp_path):
    store = MetadataStore.for_workspace(tmp_path / "ws")
    assert store.path == tmp_path / "ws" / ".deepcvr" / "metadata.sqlite"
    assert store.journal_mode() == "wal"
    con = sqlite3.connect(store.path)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"schema_version", "runs", "task_runs", "records", "assets"} <= tables
    assert con.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    MetadataStore(store.path)  # reopening keeps one version row
    assert con.execute("SELECT count(*) FROM schema_version").fetchone() == (1,)


def test_runs_tasks_and_latest(tmp_path):
    store = MetadataStore(tmp_path / "m.sqlite")
    assert store.latest_run() is None
    store.start_run("r1", "p", "p.yaml", {"target": "mysql://u:pw99@h/db", "password": "x"})
    store.plan_tasks("r1", [("a", "op.a"), ("b", "op.b")])
    store.start_task("r1", "a", "op.a")
    store.end_task("r1", "a", "succeeded", result={"rows": 3}, duration_s=0.5)
    store.end_task("r1", "b", "skipped", error="upstream task a failed")
    store.end_run("r1", "failed", error="connect to mysql://u:pw99@h/db refused")
    store.start_run("r2", "p", None)

    assert store.latest_run()["run_id"] == "r2"
    assert [r["run_id"] for r in store.runs(10)] == ["r2", "r1"]
    r1 = store.run("r1")
    assert r1["status"] == "failed" and r1["ended_at"] >= r1["started_at"]
    assert "pw99" not in r1["params_json"] + r1["error"]
    assert '"password": "***"' in r1["params_json"]
    assert r1["pid"] > 0 and r1["host"]
    tasks = store.task_runs("r1")
    assert [(t["task"], t["status"]) for t in tasks] == [("a", "succeeded"), ("b", "skipped")]
    assert tasks[0]["duration_s"] == 0.5 and tasks[0]["result_json"] == '{"rows": 3}'
    assert tasks[0]["started_at"].endswith("+00:00")
    with pytest.raises(ValueError):
        store.end_run("r1", "weird")


def test_records_and_assets(tmp_path):
    store = MetadataStore(tmp_path / "m.sqlite")
    store.record("r1", "load", "check", "pk:sample", {"ok": True, "duplicates": 0})
    store.record("r1", "transform", "accounting", "lines", 10)
    assert [r["key"] for r in store.records("r1")] == ["pk:sample", "lines"]
    checks = store.records("r1", kind="check")
    assert checks[0]["value"] == {"ok": True, "duplicates": 0}
    asset = store.add_asset("raw/train/x.csv", "raw_csv", bytes=10, rows=2, run_id="r1", task="t")
    assert store.assets("r1")[0]["asset_id"] == asset


def test_concurrent_writers(tmp_path):
    store = MetadataStore(tmp_path / "m.sqlite")
    store.start_run("r", "p", None)

    def write(i: int) -> None:
        for j in range(20):
            store.record("r", f"t{i}", "n", str(j), j)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.records("r")) == 80


def test_newer_schema_and_missing_store(tmp_path):
    store = MetadataStore(tmp_path / "m.sqlite")
    with sqlite3.connect(store.path) as con:
        con.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(DeepCVRError, match="newer than this deepcvr"):
        MetadataStore(store.path)
    with pytest.raises(DeepCVRError, match="no metadata store"):
        MetadataStore(store_path(tmp_path / "none"), create=False)
