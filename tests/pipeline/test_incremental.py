"""Incremental reruns, resume after SIGKILL, one run per workspace (issue: metadata registry)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from deepcvr.cli import app
from deepcvr.metadata import MetadataStore
from deepcvr.pipeline.config import load_pipeline
from deepcvr.pipeline.runner import run_pipeline
from deepcvr.synth import generate

PIPELINE = """
name: inc
workspace: {ws}
params:
  source: {src}
  target: "duckdb:///{ws}/db.duckdb"
tasks:
  decompress: {{op: extract.decompress, with: {{source: "${{params.source}}"}}}}
  transform: {{op: transform.aliccp, needs: [decompress], with: {{workers: {workers},
               chunk_mb: {chunk_mb}}}}}
  load: {{op: load.database, needs: [transform], with: {{target: "${{params.target}}"}}}}
"""
TABLES = (
    "field",
    "feature",
    "common_feature_group",
    "common_feature",
    "sample",
    "sample_feature",
    "rejects",
)


def make_archives(src: Path, samples: int) -> None:
    for split, seed in (("train", 1), ("test", 2)):
        generate(src, samples, split, seed=seed, archive=True)


def write_pipeline(tmp: Path, ws: Path, src: Path, workers: int = 1, chunk_mb: float = 16) -> Path:
    path = tmp / f"{ws.name}.yaml"
    path.write_text(PIPELINE.format(ws=ws, src=src, workers=workers, chunk_mb=chunk_mb))
    return path


def statuses(result) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {name: t.status for name, t in result.tasks.items()}


def row_counts(db: Path) -> dict[str, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        con.close()


def test_exactly_the_affected_tasks_rerun(tmp_path: Path) -> None:
    src, ws = tmp_path / "src", tmp_path / "ws"
    make_archives(src, 1500)
    path = write_pipeline(tmp_path, ws, src)
    first = run_pipeline(load_pipeline(path), table=False)
    assert set(statuses(first).values()) == {"succeeded"}
    again = run_pipeline(load_pipeline(path), table=False)
    assert set(statuses(again).values()) == {"skipped"}
    assert all("up to date" in (t.note or "") for t in again.tasks.values())

    param = run_pipeline(
        load_pipeline(path, ["tasks.load.with.enforce_keys_max_rows=10"]), table=False
    )
    assert statuses(param) == {"decompress": "skipped", "transform": "skipped", "load": "succeeded"}

    generate(src, 1500, "test", seed=99, archive=True)  # one input file changes
    changed = run_pipeline(
        load_pipeline(path, ["tasks.load.with.enforce_keys_max_rows=10"]), table=False
    )
    assert statuses(changed) == {
        "decompress": "succeeded",
        "transform": "succeeded",
        "load": "succeeded",
    }

    for part in (ws / "parquet" / "train" / "sample").glob("*.parquet"):
        part.unlink()  # an output disappears: its task reruns, and what depends on it
    lost = run_pipeline(
        load_pipeline(path, ["tasks.load.with.enforce_keys_max_rows=10"]), table=False
    )
    assert statuses(lost) == {
        "decompress": "skipped",
        "transform": "succeeded",
        "load": "succeeded",
    }

    forced = run_pipeline(load_pipeline(path), force=True, table=False)
    assert set(statuses(forced).values()) == {"succeeded"}
    store = MetadataStore.for_workspace(ws)
    made, used = store.lineage(str((ws / "parquet").resolve()))
    assert made and made[0]["task"] == "transform" and made[0]["input_uri"].endswith("raw")
    assert used and used[0]["task"] == "load"
    datasets = {a["uri"]: a for a in store.assets() if a["kind"] == "parquet_dataset"}
    sample = datasets[str((ws / "parquet" / "train" / "sample").resolve())]
    assert sample["rows"] == 1500 and "sample_id" in sample["schema_json"]
    tables = {a["uri"].split("#")[1]: a for a in store.assets() if a["kind"] == "table"}
    assert tables["sample"]["rows"] == 3000
    shown = CliRunner().invoke(app, ["lineage", str(ws / "parquet"), "--workspace", str(ws)])
    assert shown.exit_code == 0, shown.output
    assert "transform" in shown.output and "load" in shown.output and "raw" in shown.output


def task_status(ws: Path, task: str) -> str | None:
    db = ws / ".deepcvr" / "metadata.sqlite"
    if not db.exists():
        return None
    try:
        con = sqlite3.connect(db, timeout=1)
        row = con.execute(
            "SELECT t.status FROM task_runs t JOIN runs r USING (run_id) WHERE t.task = ? "
            "ORDER BY r.started_at DESC LIMIT 1",
            (task,),
        ).fetchone()
        con.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def start_run(path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "deepcvr", "-q", "run", str(path)],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for(cond, proc, seconds: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not cond():
        assert proc.poll() is None, f"run ended before the kill point: {proc.stderr.read()!r}"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def big_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    make_archives(src, 30_000)
    return src


@pytest.fixture(scope="module")
def reference(big_src: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    tmp = tmp_path_factory.mktemp("ref")
    ws = tmp / "ws"
    result = run_pipeline(load_pipeline(write_pipeline(tmp, ws, big_src)), table=False)
    assert result.status == "succeeded"
    return row_counts(ws / "db.duckdb")


@pytest.mark.parametrize("point", ["decompress", "transform", "load"])
def test_sigkill_then_rerun_gives_the_same_database(
    point: str, big_src: Path, reference: dict[str, int], tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    path = write_pipeline(tmp_path, ws, big_src, workers=2, chunk_mb=0.5)
    proc = start_run(path)
    if point == "transform":

        def cond() -> bool:
            return any((ws / "parquet").glob("*/sample_feature/part-*.parquet"))
    else:

        def cond() -> bool:
            return task_status(ws, point) == "running"

    wait_for(cond, proc)
    if point == "load":
        time.sleep(0.3)  # inside the bulk insert
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    rerun = subprocess.run(
        [sys.executable, "-m", "deepcvr", "-q", "run", str(path)], capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert row_counts(ws / "db.duckdb") == reference
    leftovers = [p for p in ws.rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []
    runs = MetadataStore.for_workspace(ws).runs()
    assert [r["status"] for r in runs] == ["succeeded", "interrupted"]


def test_second_concurrent_run_is_refused(big_src: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    path = write_pipeline(tmp_path, ws, big_src)
    first = start_run(path)
    wait_for(lambda: task_status(ws, "decompress") in ("running", "succeeded"), first)
    second = subprocess.run(
        [sys.executable, "-m", "deepcvr", "-q", "run", str(path)], capture_output=True, text=True
    )
    assert second.returncode == 3
    assert "is in use by run" in second.stderr and "pid" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert MetadataStore.for_workspace(ws).latest_run()["status"] == "succeeded"
