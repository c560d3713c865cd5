"""The README is a contract: two set-up commands, the test one run verbatim by .ci/run, and
every CLI command documented."""

from __future__ import annotations

import re
from pathlib import Path

from typer.main import get_command

from deepcvr.cli import app

ROOT = Path(__file__).resolve().parents[1]


def setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    demo, tests = setup_commands()
    assert "deepcvr run pipelines/demo.yaml" in demo and "\n" not in demo
    assert "pytest" in tests and "\n" not in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()


def test_every_command_is_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in get_command(app).commands:  # type: ignore[attr-defined]
        assert re.search(rf"deepcvr (.*\| )?{name}\b", readme), name
