"""The cases the MySQL/MariaDB and PostgreSQL tests both run, against a `Server` (conftest.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from sqlalchemy.engine import make_url

from deepcvr.load.database import load
from deepcvr.load.sql_target import STAGING
from deepcvr.schema import MODEL, SAMPLE_FEATURE
from tests.helpers import read_raw, rebuild
from tests.load.conftest import ROOT, TRICKY_REJECTS, TRICKY_TEXT, Server


class _Rebuilder:
    """tests.helpers.rebuild speaks DuckDB; this adapts its one query to a DB-API server."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def execute(self, sql: str, params: list[Any]) -> _Rebuilder:
        if self.server.kind == "mysql":
            sql = sql.replace("AS VARCHAR", "AS CHAR")
        self.rows = self.server.sql(sql.replace("?", "%s"), tuple(params))
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


def check_end_to_end(server: Server, dataset: dict[str, Path]) -> None:
    summary = load(dataset["both"], server.url)
    assert {c["ok"] for c in summary["checks"]} == {True}
    assert all(
        info["keys"] == "enforced" for n, info in summary["tables"].items() if n != "rejects"
    )
    for t in MODEL:
        assert server.counts()[t.name] == summary["tables"][t.name]["rows"]
    con = _Rebuilder(server)
    for split in ("train", "test"):
        for kind, name in (("skeleton", "sample_skeleton"), ("common", "common_features")):
            lines = read_raw(dataset["raw"] / split / f"{name}_{split}.csv", kind)
            assert rebuild(con, split, kind) == {k: v for k, (_, v) in lines.items()}  # type: ignore[arg-type]
    fks = server.foreign_keys()
    assert ("sample_feature", "sample", "sample_id,split") in fks
    assert ("sample_feature", "feature", "feature_id") in fks
    assert ("common_feature", "common_feature_group", "common_feature_index,split") in fks
    assert ("common_feature", "feature", "feature_id") in fks
    assert ("sample", "common_feature_group", "common_feature_index,split") in fks
    assert ("feature", "field", "field_id") in fks
    assert len(fks) == 6
    assert not [t for t in server.tables() if "__" in t]
    keys = server.sql("SELECT count(*) FROM deepcvr_keys WHERE violations = 0")[0][0]
    assert keys == len(MODEL) + sum(len(t.foreign_keys) for t in MODEL)
    server.baseline = server.fingerprint()


def check_idempotent_and_splits(server: Server, dataset: dict[str, Path]) -> None:
    before = server.ensure_loaded(dataset)
    twice = load(dataset["both"], server.url)
    assert server.fingerprint() == before
    assert {t.name: twice["tables"][t.name]["rows"] for t in MODEL} == server.counts()
    load(dataset["train"], server.url)  # replaces train, keeps test
    load(dataset["test"], server.url)
    assert server.fingerprint() == before
    assert not [t for t in server.tables() if "__" in t]


def check_failure_is_atomic(
    server: Server, dataset: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure half way through the biggest table leaves the live tables as they were."""
    from deepcvr.load import tsv

    before = server.ensure_loaded(dataset)
    half = server.counts()["sample_feature"] // 2
    real = tsv.to_tsv
    seen = {"sample_feature": 0}

    def failing(batch: pa.RecordBatch) -> bytes:
        if batch.schema.names == SAMPLE_FEATURE.column_names:
            seen["sample_feature"] += batch.num_rows
            if seen["sample_feature"] > half:
                raise OSError("disk vanished (injected)")
        return real(batch)

    monkeypatch.setattr(tsv, "to_tsv", failing)
    monkeypatch.setattr(tsv, "BATCH_ROWS", 4096)
    with pytest.raises(OSError, match="injected"):
        load(dataset["both"], server.url)
    assert server.fingerprint() == before
    assert not [t for t in server.tables() if STAGING in t or "__old_" in t]


def check_foreign_key_violation(server: Server, dataset: dict[str, Path]) -> None:
    from deepcvr.errors import DataError

    before = server.ensure_loaded(dataset)
    with pytest.raises(DataError, match=r"sample_feature.*(foreign key|violates)"):
        load(dataset["orphan"], server.url)
    assert server.fingerprint() == before
    assert not [t for t in server.tables() if "__" in t]


def check_shape_and_replace(server: Server, dataset: dict[str, Path]) -> None:
    from deepcvr.errors import TargetError

    server.ensure_loaded(dataset)
    server.sql("ALTER TABLE rejects ADD COLUMN extra INT")
    before = server.fingerprint()
    with pytest.raises(TargetError, match=r"table rejects exists with another shape.*--replace"):
        load(dataset["both"], server.url)
    assert server.fingerprint() == before
    assert "extra" in _columns(server, "rejects")
    load(dataset["both"], server.url, replace=True)
    assert "extra" not in _columns(server, "rejects")


def _columns(server: Server, table: str) -> list[str]:
    schema = "DATABASE()" if server.kind == "mysql" else "current_schema()"
    rows = server.sql(
        "SELECT column_name FROM information_schema.columns "
        f"WHERE table_schema = {schema} AND table_name = %s",
        (table,),
    )
    return [r[0] for r in rows]


def check_stale_staging_is_dropped(server: Server, dataset: dict[str, Path]) -> None:
    """Tables a killed load left behind go on the next load."""
    server.sql("CREATE TABLE sample__staging_deadbeef (x INT)")
    server.sql("CREATE TABLE feature__old_deadbeef (x INT)")
    server.sql("CREATE TABLE mine__staging_keep (x INT)")  # not ours: kept
    load(dataset["both"], server.url)
    assert {t for t in server.tables() if "__" in t} == {"mine__staging_keep"}
    server.sql("DROP TABLE mine__staging_keep")


def check_unreachable(server: Server, dataset: dict[str, Path]) -> None:
    from deepcvr.errors import TargetError

    url = make_url(server.url).set(port=1).render_as_string(hide_password=False)
    with pytest.raises(TargetError, match=r"cannot connect to 127.0.0.1:1 within 10 s"):
        load(dataset["both"], url)


def check_silent_server_times_out(
    server: Server, dataset: dict[str, Path], module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host that accepts TCP but never answers fails within the connect timeout."""
    import socket
    import time

    from deepcvr.errors import TargetError

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    monkeypatch.setattr(module, "CONNECT_TIMEOUT", 1)
    url = make_url(server.url).set(port=port).render_as_string(hide_password=False)
    start = time.monotonic()
    try:
        with pytest.raises(TargetError, match="cannot connect"):
            load(dataset["both"], url)
    finally:
        listener.close()
    assert time.monotonic() - start < 5


def check_unknown_database(server: Server, dataset: dict[str, Path]) -> None:
    from deepcvr.errors import TargetError

    url = make_url(server.url).set(database="deepcvr_no_such_db").render_as_string(False)
    with pytest.raises(TargetError, match="database 'deepcvr_no_such_db' does not exist"):
        load(dataset["both"], url)


def check_missing_parquet_table(server: Server, dataset: dict[str, Path], tmp_path: Path) -> None:
    from deepcvr.errors import DataError

    before = server.ensure_loaded(dataset)
    broken = tmp_path / "broken"
    shutil.copytree(dataset["both"], broken)
    shutil.rmtree(broken / "test" / "sample")
    with pytest.raises(DataError, match="table sample is missing"):
        load(broken, server.url)
    assert server.fingerprint() == before


def check_rejects_round_trip(server: Server, dataset: dict[str, Path]) -> None:
    """Escapes, NULLs and non-ASCII text come back exactly; then the baseline again."""
    load(dataset["tricky"], server.url)
    rows = server.sql("SELECT line, position, detail, raw FROM rejects ORDER BY line")
    expected = zip(
        TRICKY_REJECTS["line"],
        TRICKY_REJECTS["position"],
        TRICKY_REJECTS["detail"],
        TRICKY_TEXT,
        strict=True,
    )
    assert [tuple(r) for r in rows] == list(expected)
    load(dataset["both"], server.url)
    assert server.sql("SELECT count(*) FROM rejects")[0][0] == 0


def check_summary(server: Server) -> None:
    from deepcvr.quality.summary import summarize

    summary = summarize(server.url)
    assert summary["rows"]["sample"] == server.counts()["sample"]
    assert set(summary["splits"]) == {"train", "test"}
    assert summary["splits"]["train"]["impressions"] == 2000
    assert isinstance(summary["splits"]["train"]["ctr"], float)


def check_demo(server: Server, tmp_path: Path) -> None:
    """The demo pipeline, unchanged, through the real CLI, into `server`."""
    from deepcvr.metadata import MetadataStore, store_path

    cmd = [sys.executable, "-m", "deepcvr", "run", str(ROOT / "pipelines" / "demo.yaml")]
    cmd += ["--set", f"target={server.url}", "--set", "samples=2000"]
    cmd += ["--set", f"workspace={tmp_path / 'ws'}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    store = MetadataStore(store_path(tmp_path / "ws"), create=False)
    run = store.latest_run()
    assert run is not None, result.stderr[-2000:]
    tasks = {t["task"]: t for t in store.task_runs(run["run_id"])}
    for task in ("load", "summary"):
        assert tasks[task]["status"] == "succeeded", (task, tasks[task]["error"])
    checks = store.records(run["run_id"], "load_check")
    assert checks and all(c["value"]["ok"] for c in checks)
    assert server.counts()["sample"] == 4000
    failed = {name: t["error"] for name, t in tasks.items() if t["status"] != "succeeded"}
    assert not failed, failed
    assert result.returncode == 0, result.stderr[-2000:]
    for task in ("checks", "report"):  # the quality ops read the server's tables too
        assert tasks[task]["status"] == "succeeded"
    assert (tmp_path / "ws" / "report.html").stat().st_size > 10_000
