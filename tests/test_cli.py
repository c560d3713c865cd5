"""The CLI: every command documented, op commands built from params models, status/history."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from deepcvr.cli import ErrorHandlingGroup, app
from deepcvr.cliparams import add_op_command
from deepcvr.extract.ops import DecompressParams
from deepcvr.load.ops import LoadParams
from deepcvr.synth_op import GenerateParams
from deepcvr.transform.ops import TransformParams

runner = CliRunner()
COMMANDS = get_command(app).commands  # type: ignore[attr-defined]


def test_contract_commands_exist():
    contract = {"run", "validate", "generate", "transform", "load", "status", "history"}
    assert contract <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_is_documented(name):
    command = COMMANDS[name]
    assert (command.help or "").strip(), f"command {name} has no help: add a docstring"
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.stdout


def _options(name: str) -> set[str]:
    return {opt for p in COMMANDS[name].params for opt in getattr(p, "opts", [])}


@pytest.mark.parametrize(
    ("name", "model", "positional"),
    [
        ("generate", GenerateParams, {"out"}),
        ("decompress", DecompressParams, {"source", "output"}),
        ("transform", TransformParams, {"input", "output"}),
        ("load", LoadParams, {"input"}),
    ],
)
def test_stage_command_options_mirror_the_params_model(name, model, positional):
    flags = {f"--{f.replace('_', '-')}" for f in model.model_fields if f not in positional}
    assert flags <= _options(name)
    arguments = [p.name for p in COMMANDS[name].params if p.param_type_name == "argument"]
    assert set(arguments) == positional


def _sub_app(arguments: dict[str, str]) -> typer.Typer:
    sub = typer.Typer(cls=ErrorHandlingGroup)
    add_op_command(sub, "step", "test.step", arguments)
    add_op_command(sub, "other", "test.step")  # two commands: Typer makes a group
    return sub


def test_op_command_helper(tmp_path, calls):
    sub = _sub_app({"tag": "TAG"})
    ws = str(tmp_path / "ws")
    args = ["step", "hello", "--count", "3", "--splits", "train", "--splits", "test", "--flag"]
    result = runner.invoke(sub, [*args, "--workspace", ws])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["count"] == 3 and calls == ["step"]

    bad = runner.invoke(sub, ["step", "x", "--count", "0", "--workspace", ws])
    assert bad.exit_code == 2
    assert "--count: input should be greater than or equal to 1 (got 0)" in bad.output
    choice = runner.invoke(sub, ["step", "x", "--fail", "nope", "--workspace", ws])
    assert choice.exit_code == 2  # Literal -> choices, rejected by the parser


def test_op_command_failure_is_one_line(tmp_path, calls):
    sub = _sub_app({})
    args = ["step", "--fail", "user", "--message", "no space left", "--workspace", str(tmp_path)]
    result = runner.invoke(sub, args)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == "error: no space left"
    bug = runner.invoke(sub, ["step", "--fail", "bug", "--workspace", str(tmp_path)])
    assert bug.exit_code == 1
    assert bug.stderr.splitlines()[-1] == "error: ValueError: boom"
    assert "Traceback" not in result.stderr + bug.stderr


def test_app_op_command_error_line(tmp_path):
    result = runner.invoke(app, ["generate", str(tmp_path / "out"), "--samples", "0"])
    assert result.exit_code == 2
    assert result.stderr == "error: --samples: input should be greater than or equal to 1 (got 0)\n"


def test_status_and_history(write_pipeline, tmp_path, calls, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DEEPCVR_WORKSPACE", raising=False)
    empty = runner.invoke(app, ["status"])
    assert empty.exit_code == 0 and "no runs recorded" in empty.stdout

    path = write_pipeline(
        "name: st\nworkspace: data/one\ntasks:\n"
        "  first: {op: test.step}\n  second: {op: test.step, needs: [first], with: {fail: user}}\n"
    )
    assert runner.invoke(app, ["run", str(path)]).exit_code == 1
    result = runner.invoke(app, ["status"])  # found in ./data/*/ without --workspace
    assert result.exit_code == 0, result.output
    assert "pipeline st" in result.stdout and "failed" in result.stdout
    assert "first" in result.stdout and "second" in result.stdout and "boom" in result.stdout

    assert (
        runner.invoke(app, ["run", str(path), "--set", "tasks.second.with.fail=none"]).exit_code
        == 0
    )
    history = runner.invoke(app, ["history", "--workspace", "data/one"])
    assert history.exit_code == 0
    assert history.stdout.count(" st ") == 2
    assert "succeeded" in history.stdout and "failed" in history.stdout


def test_traceback_only_with_verbose(tmp_path, calls):
    sub = _sub_app({})
    args = ["step", "--fail", "bug", "--workspace", str(tmp_path)]
    assert "Traceback" not in runner.invoke(app, ["-q", "status"]).output  # resets logging
    quiet = runner.invoke(sub, args)
    assert "Traceback" not in quiet.stderr
    from deepcvr.logsetup import setup_logging

    setup_logging(verbose=True)
    try:
        loud = runner.invoke(sub, args)
    finally:
        setup_logging()
    assert "Traceback" in loud.stderr and "ValueError: boom" in loud.stderr


def test_interrupt_exits_130(write_pipeline, calls):
    path = write_pipeline(
        "name: i\nworkspace: '{ws}'\ntasks:\n  a: {op: test.step, with: {fail: interrupt}}\n"
    )
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 130
    assert result.stderr.splitlines()[-1] == "error: interrupted"


def test_stage_command_that_is_up_to_date_exits_zero(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from deepcvr.synth import generate

    generate(tmp_path / "raw" / "train", 300, "train", seed=1)
    args = [
        "transform",
        str(tmp_path / "raw"),
        str(tmp_path / "out"),
        "--workers",
        "1",
        "--workspace",
        str(tmp_path / "ws"),
    ]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "up to date" in again.output


def test_output_cut_short_by_the_reader_is_not_an_internal_error():
    """`deepcvr transform --help | head -3`: the closed pipe is not reported as a crash."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepcvr", "transform", "--help"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the child has even imported: its first write hits a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait() != 0
    assert "internal error" not in err and "Traceback" not in err
