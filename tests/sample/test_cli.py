"""`deepcvr sample`: options, dry run, one-line errors; sampling a loaded database."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from deepcvr.cli import app
from deepcvr.sample.ops import SampleParams

runner = CliRunner()


def sample(*args: str, ws: Path) -> tuple[int, str, str]:
    result = runner.invoke(app, ["-q", "sample", *args, "--workspace", str(ws)])
    return result.exit_code, result.stdout, result.stderr


def test_command_mirrors_the_params_model():
    command = get_command(app).commands["sample"]  # type: ignore[attr-defined]
    options = {opt for p in command.params for opt in getattr(p, "opts", [])}
    flags = {f"--{f.replace('_', '-')}" for f in SampleParams.model_fields} - {
        "--input",
        "--output",
    }
    assert flags <= options
    assert {"--margin", "--confidence", "--seed", "--dry-run", "--by", "--source"} <= options
    arguments = [p.name for p in command.params if p.param_type_name == "argument"]
    assert arguments == ["input", "output"]


def test_dry_run_prints_the_design_and_writes_nothing(population, tmp_path):
    out = tmp_path / "out"
    args = ["--dry-run", "--margin", "0.001", "--confidence", "0.99"]
    code, stdout, stderr = sample(str(population), str(out), *args, ws=tmp_path / "ws")
    assert code == 0, stderr
    assert not out.exists()
    assert sample(str(population), str(out), *args, ws=tmp_path / "ws")[0] == 0  # never skipped
    assert not out.exists()
    size = json.loads(stdout)["splits"]["train"]["size"]
    assert size["z"] == pytest.approx(2.575829, abs=1e-6) and size["margin"] == 0.001
    for word in ("N=40,000", "z=2.5758", "n0=", "(0,1)", "dry run: nothing written"):
        assert word in stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--margin", "0"], 2, "--margin: input should be greater than 0"),
        (["--margin", "-1"], 2, "--margin: input should be greater than 0"),
        (["--confidence", "1"], 2, "--confidence: input should be less than 1"),
        (["--confidence", "0"], 2, "--confidence: input should be greater than 0"),
        (["--fraction", "0"], 2, "--fraction: input should be greater than 0"),
        (["--fraction", "1.5"], 2, "--fraction: input should be less than or equal to 1"),
        (["--size", "999999"], 2, "size 999999 is larger than the population"),
        (["--by", "150_14"], 2, "--by 150_14: not a single-valued impression field"),
        (["--allocation", "explicit"], 2, "missing 0,0, 1,0, 1,1, 0,1"),
    ],
)
def test_bad_inputs_are_one_line_errors(population, tmp_path, args, code, message):
    out = tmp_path / "out"
    exit_code, _, stderr = sample(str(population), str(out), *args, ws=tmp_path / "ws")
    assert exit_code == code
    assert stderr.startswith("error: ") and message in stderr
    assert stderr.count("\n") == 1
    assert not out.exists()


def test_missing_raw_dir(tmp_path):
    code, _, stderr = sample(str(tmp_path / "nope"), str(tmp_path / "o"), ws=tmp_path / "ws")
    assert code == 1 and stderr == f"error: {tmp_path / 'nope'}: raw directory not found\n"


@pytest.fixture(scope="module")
def loaded(population, tmp_path_factory) -> Path:
    """The test split transformed and loaded into DuckDB with the project's own commands."""
    root = tmp_path_factory.mktemp("db")
    ws = ["--workspace", str(root / "ws")]
    parquet, db = root / "parquet", root / "pop.duckdb"
    args = [str(population), str(parquet), "--split", "test", "--workers", "1", *ws]
    done = runner.invoke(app, ["-q", "transform", *args])
    assert done.exit_code == 0, done.stderr
    done = runner.invoke(app, ["-q", "load", str(parquet), "--target", f"duckdb:///{db}", *ws])
    assert done.exit_code == 0, done.stderr
    return db


@pytest.mark.parametrize("by", [[], ["--by", "301"]])
def test_database_source_selects_the_same_sample(population, loaded, tmp_path, by):
    """Same seed, same hash: the sample drawn from the tables is the raw-file sample, and the
    lines rebuilt from the tables are byte-identical to the raw lines."""
    common = ["--seed", "9", "--fraction", "0.05", "--split", "test", *by]
    code, _, err = sample(str(population), str(tmp_path / "raw"), *common, ws=tmp_path / "ws")
    assert code == 0, err
    code, stdout, err = sample(
        "-", str(tmp_path / "db"), "--source", f"duckdb:///{loaded}", *common, ws=tmp_path / "ws"
    )
    assert code == 0, err
    assert json.loads(stdout)["splits"]["test"]["missing_common_rows"] == 0
    for name in ("sample_skeleton_test.csv", "common_features_test.csv"):
        raw_bytes = (tmp_path / "raw" / "test" / name).read_bytes()
        assert raw_bytes and raw_bytes == (tmp_path / "db" / "test" / name).read_bytes()


def test_source_and_raw_dir_conflict(loaded, population, tmp_path):
    code, _, stderr = sample(
        str(population), str(tmp_path / "o"), "--source", f"duckdb:///{loaded}", ws=tmp_path
    )
    assert code == 2 and "give RAW_DIR or --source, not both" in stderr
    code, _, stderr = sample("-", str(tmp_path / "o"), "--source", "duckdb:///nope.db", ws=tmp_path)
    assert code == 1 and "database file nope.db not found" in stderr


def test_load_target_loads_the_sample_as_tables(population, tmp_path):
    target = tmp_path / "sample.duckdb"
    args = ["--split", "test", "--fraction", "0.1", "--workers", "1"]
    args += ["--load-target", f"duckdb:///{target}"]
    code, stdout, err = sample(str(population), str(tmp_path / "out"), *args, ws=tmp_path / "ws")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["load"]["tables"]["sample"]["rows"] == result["sample"]
    lines = (tmp_path / "out" / "test" / "sample_skeleton_test.csv").read_bytes().splitlines()
    with duckdb.connect(str(target), read_only=True) as con:
        ids = [r[0] for r in con.execute("SELECT sample_id FROM sample ORDER BY 1").fetchall()]
        groups = con.execute("SELECT count(*) FROM common_feature_group").fetchall()[0][0]
    assert ids == [int(line.split(b",", 1)[0]) for line in lines]
    assert groups == result["splits"]["test"]["common_lines"]
