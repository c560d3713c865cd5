"""Bounded memory: the sampler runs under an address-space cap that reading the whole input
files cannot fit in.

The cap is RLIMIT_AS = (peak of the same process on a tiny input) + 128 MB, measured here, not
guessed. Polars, NumPy and PyArrow reserve address space at import and per thread (jemalloc
arenas, glibc per-thread malloc arenas, thread stacks), and how much varies with the thread
count, so the subprocesses run with one Polars thread, one malloc arena and Arrow's system
allocator; with those, peaks are stable to a few MB (RLIMIT_DATA was tried and is not: glibc
and jemalloc fall back differently near the limit, so runs fail or pass non-monotonically).
Measured on 200k impressions (97.5 MB of CSV), address space / resident peaks: tiny input
422 / 140 MB; sampler 457 / 168 MB; a plain whole-file Polars read 698 / 300 MB. Cap ≈ 550 MB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deepcvr.synth import generate

pytestmark = pytest.mark.slow

HEADROOM = 128 << 20
SCRIPT = """
import json, logging, resource, sys
cap, mode, raw, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
if cap:
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
from pathlib import Path
import polars as pl
from deepcvr.sample.sampler import SampleOptions, sample_raw  # same imports in every mode
logging.disable(logging.CRITICAL)
if mode == "sample":
    opts = SampleOptions(seed=1, fraction=0.02, workers=1, chunk_bytes=2 << 20)
    sample_raw(Path(raw), Path(out), opts)
else:  # what a sampler holding whole files needs at the very least
    frames = [pl.read_csv(p, has_header=False, quote_char=None) for p in Path(raw).glob("*.csv")]
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({k: int(status[k].split()[0]) << 10 for k in ("VmPeak", "VmHWM")}))
"""
ENV = {
    **os.environ,
    "POLARS_MAX_THREADS": "1",
    "MALLOC_ARENA_MAX": "1",
    "OMP_NUM_THREADS": "1",
    "ARROW_DEFAULT_MEMORY_POOL": "system",
}


def _run(cap: int, mode: str, raw: Path, out: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", SCRIPT, str(cap), mode, str(raw), str(out)]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)


def test_sampler_fits_where_whole_files_do_not(tmp_path):
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc (Linux) to read peak memory")
    tiny, big = tmp_path / "tiny", tmp_path / "big"
    generate(tiny, 2_000, "train", seed=5)
    generate(big, 200_000, "train", seed=5)
    size = sum(p.stat().st_size for p in big.glob("*.csv"))

    base = _run(0, "sample", tiny, tmp_path / "o0")
    assert base.returncode == 0, base.stderr
    floor = json.loads(base.stdout)
    cap = floor["VmPeak"] + HEADROOM

    whole = _run(cap, "whole", big, tmp_path / "o1")
    assert whole.returncode != 0, f"whole files fit under {cap >> 20} MB: raise the input size"

    sampled = _run(cap, "sample", big, tmp_path / "o2")
    assert sampled.returncode == 0, f"sampler over {cap >> 20} MB: {sampled.stderr[-2000:]}"
    peak = json.loads(sampled.stdout)
    assert peak["VmPeak"] <= cap
    assert peak["VmHWM"] - floor["VmHWM"] < size // 2  # resident growth: a few chunks
    lines = (tmp_path / "o2" / "train" / "sample_skeleton_train.csv").read_bytes().count(b"\n")
    report = json.loads((tmp_path / "o2" / "sample_report.json").read_text())
    assert lines == report["splits"]["train"]["sample"]
    assert 4_000 <= lines <= 4_004  # 2 % of 200k, plus rare strata lifted to 1
