"""End to end: `deepcvr run pipelines/aliccp.yaml --set source=s3://...` against a moto server,
with generated Ali-CCP archives, into a DuckDB file."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
from typer.testing import CliRunner

from deepcvr.cli import app
from deepcvr.metadata import MetadataStore
from deepcvr.synth import generate
from tests.extract.conftest import S3Env, sha256

PIPELINE = Path(__file__).resolve().parents[2] / "pipelines" / "aliccp.yaml"
SAMPLES = 2000


def test_aliccp_yaml_is_valid():
    result = CliRunner().invoke(app, ["validate", str(PIPELINE)])
    assert result.exit_code == 0, result.output
    assert "tasks download, decompress" in result.stdout


def test_aliccp_pipeline_from_s3_into_duckdb(s3: S3Env, tmp_path, monkeypatch):
    archives = tmp_path / "archives"
    made = {split: generate(archives, SAMPLES, split, seed, archive=True)
            for split, seed in (("train", 1), ("test", 2))}  # fmt: skip
    for res in made.values():
        (path,) = res.files
        s3.put(f"aliccp/{path.name}", path.read_bytes())
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.url)  # boto3 reads it: nothing else to set
    ws = tmp_path / "ws"
    args = ["run", str(PIPELINE), "--set", f"source=s3://{s3.bucket}/aliccp/"]
    result = CliRunner().invoke(app, [*args, "--set", f"workspace={ws}"])
    assert result.exit_code == 0, result.output

    with duckdb.connect(str(ws / "deepcvr.duckdb"), read_only=True) as con:
        samples = dict(con.execute("SELECT split, count(*) FROM sample GROUP BY 1").fetchall())
        groups = dict(
            con.execute("SELECT split, count(*) FROM common_feature_group GROUP BY 1").fetchall()
        )
    assert samples == {"train": SAMPLES, "test": SAMPLES}
    assert groups == {split: res.common_rows for split, res in made.items()}

    store = MetadataStore.for_workspace(ws, create=False)
    run = store.latest_run()
    assert run["status"] == "succeeded"
    tasks = {t["task"]: t for t in store.task_runs(run["run_id"])}
    summary = json.loads(tasks["download"]["result_json"])
    assert summary["downloaded"] == 2 and summary["skipped"] == 0
    archives_recorded = {a["uri"]: a for a in store.assets(run["run_id"]) if a["kind"] == "archive"}
    for res in made.values():
        (path,) = res.files
        asset = archives_recorded[f"s3://{s3.bucket}/aliccp/{path.name}"]
        assert asset["checksum"] == f"sha256:{sha256(path.read_bytes())}"
        assert (ws / "external" / path.name).read_bytes() == path.read_bytes()
