"""The demo pipeline samples its raw train split and ingests the sample with the same ops."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from deepcvr.metadata import MetadataStore, store_path
from deepcvr.pipeline.config import load_pipeline
from deepcvr.pipeline.runner import run_pipeline

DEMO = Path(__file__).resolve().parents[2] / "pipelines" / "demo.yaml"


def test_demo_ingests_its_own_sample(tmp_path):
    ws = tmp_path / "demo"
    pipeline = load_pipeline(DEMO, [f"workspace={ws}", "samples=2000"])
    tasks = pipeline.config.tasks
    assert tasks["sample"].op == "sample.stratified"
    assert tasks["sample_transform"].needs == ["sample"]
    assert tasks["sample_load"].needs == ["sample_transform"]

    result = run_pipeline(pipeline, table=False)
    assert result.status == "succeeded", {n: t.error for n, t in result.tasks.items()}

    report = json.loads((ws / "sample" / "raw" / "sample_report.json").read_text())
    train = report["splits"]["train"]
    assert list(report["splits"]) == ["train"] and train["size"]["method"] == "calculator"
    assert train["population"] == 2000 and 0 < train["sample"] < 2000
    present = {(r["click"], r["conversion"]) for r in train["strata"] if r["n"]}
    assert present == {(0, 0), (1, 0), (1, 1), (0, 1)}
    with duckdb.connect(str(ws / "sample.duckdb"), read_only=True) as con:
        sampled = con.execute("SELECT split, count(*) FROM sample GROUP BY 1").fetchall()
        ids = {r[0] for r in con.execute("SELECT sample_id FROM sample").fetchall()}
        orphans = con.execute(
            "SELECT count(*) FROM sample s ANTI JOIN common_feature_group g "
            "USING (split, common_feature_index)"
        ).fetchall()[0][0]
        unused = con.execute(
            "SELECT count(*) FROM common_feature_group g ANTI JOIN sample s "
            "USING (split, common_feature_index)"
        ).fetchall()[0][0]
    assert sampled == [("train", train["sample"])]
    assert orphans == 0 and unused == 0
    with duckdb.connect(str(ws / "deepcvr.duckdb"), read_only=True) as con:
        full = {
            r[0]
            for r in con.execute("SELECT sample_id FROM sample WHERE split = 'train'").fetchall()
        }
    assert ids <= full  # original sample_ids kept

    # A second run: the sample is up to date (the op says so itself), so the sample's
    # transform and load are skipped by the runner; lineage links the raw and sample data.
    again = run_pipeline(load_pipeline(DEMO, [f"workspace={ws}", "samples=2000"]), table=False)
    assert again.tasks["sample"].status == "succeeded"
    assert (again.tasks["sample"].result or {})["skipped"] == "up to date"
    assert again.tasks["sample_transform"].status == "skipped"
    store = MetadataStore(store_path(ws), create=False)
    made, used = store.lineage(str((ws / "sample" / "raw").resolve()))
    assert made[0]["input_uri"] == str((ws / "raw").resolve())
    assert any(edge["task"] == "sample_transform" for edge in used)
