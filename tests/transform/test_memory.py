"""The transform streams: it runs under a memory cap that a whole-file approach exceeds."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from deepcvr.synth import generate
from tests.memcap import run_capped

ROOT = Path(__file__).resolve().parents[2]
CAP = 420 * 1_000_000  # bytes of resident memory, whole process tree


def test_transform_fits_under_a_cap_a_whole_file_parse_exceeds(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    generate(raw / "train", 200_000, "train", seed=2)  # ~95 MB of CSV
    env = {**os.environ, "POLARS_MAX_THREADS": "1"}
    ours = run_capped(
        [
            sys.executable,
            "-m",
            "deepcvr",
            "-q",
            "transform",
            str(raw),
            str(tmp_path / "out"),
            "--workers",
            "1",
            "--chunk-mb",
            "2",
            "--workspace",
            str(tmp_path / "ws"),
        ],
        CAP,
        env,
    )
    assert not ours.killed and ours.returncode == 0, (ours.peak_rss, ours.stderr[-2000:])
    whole_file = run_capped(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "references" / "naive_polars.py"),
            str(raw),
            str(tmp_path / "naive"),
        ],
        CAP,
        env,
    )
    assert whole_file.killed, f"the cap is too loose: whole-file peak {whole_file.peak_rss:,}"
