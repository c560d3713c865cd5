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


def test_download_task_in_place_and_force(write_pipeline, tmp_path):
    """The aliccp default (source = WORKSPACE/external) verifies hand-placed archives in place;
    `force: true` in `with:` fetches again even when the files verify."""
    ext = tmp_path / "ws" / "external"
    ext.mkdir(parents=True)
    (ext / "sample_test.tar.gz").write_bytes(b"placed by hand")
    path = write_pipeline(
        "name: d\nworkspace: {ws}\ntasks:\n"
        "  here: {op: extract.download, with: {source: '${workspace}/external'}}\n"
    )
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    store = MetadataStore.for_workspace(tmp_path / "ws", create=False)
    (rec,) = store.records(store.latest_run()["run_id"], "download")
    assert rec["value"]["status"] == "skipped" and "same file" in rec["value"]["checks"]

    src = tmp_path / "src"
    src.mkdir()
    (src / "sample_train.tar.gz").write_bytes(b"archive bytes")
    path = write_pipeline(
        f"name: d\nworkspace: {{ws}}\ntasks:\n  get: {{op: extract.download, with: "
        f"{{source: '{src}', output: '{tmp_path / 'out'}', link: false, force: true}}}}\n"
    )
    for _ in range(2):
        result = CliRunner().invoke(app, ["run", str(path)])
        assert result.exit_code == 0, result.output
        (rec,) = store.records(store.latest_run()["run_id"], "download")
        assert rec["value"]["status"] == "copied"
