"""The documented spark-submit entry script: its own JVM and --master, a JSON summary on
success, one `error:` line and exit 1 for a user mistake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.spark


@pytest.mark.slow
def test_spark_submit_of_the_entry_script(spark: Any, tmp_path: Path) -> None:
    """The docs' two-line entry script under spark-submit (its own JVM, its --master)."""
    import pyspark

    raw = tmp_path / "raw"
    raw.mkdir()
    idx = "0123456789abcdef"
    (raw / "common_features_train.csv").write_text(f"{idx},1,101\x027\x031.0\n")
    (raw / "sample_skeleton_train.csv").write_text(f"1,0,0,{idx},1,205\x028\x031.0\nbad\n")
    script = tmp_path / "run_transform.py"
    script.write_text("from deepcvr.transform.spark_engine import main\n\nmain()\n")
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    env.pop("PYSPARK_GATEWAY_PORT", None)
    args = [str(raw), str(tmp_path / "out"), "--max-reject-ratio", "1"]
    result = subprocess.run(
        [
            str(submit),
            "--master",
            "local[1]",
            "--conf",
            "spark.ui.enabled=false",
            str(script),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["master"] == "local[1]"
    assert summary["splits"]["train"]["accounting"]["rejected_lines"] == 1
    assert (tmp_path / "out" / "train" / "_manifest.json").exists()
    failed = subprocess.run(
        [str(submit), "--master", "local[1]", str(script), str(tmp_path / "none"), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert failed.returncode == 1
    # spark-submit passes the Python driver's stderr on through its stdout.
    output = (failed.stdout + failed.stderr).splitlines()
    errors = [line for line in output if line.startswith("error: ")]
    assert len(errors) == 1 and "no raw files" in errors[0], failed.stdout[-2000:]
