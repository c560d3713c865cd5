"""Ctrl-C during a transform leaves no partial Parquet part visible, and no worker behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq

from deepcvr.synth import generate


def test_ctrl_c_leaves_only_complete_parts(tmp_path: Path) -> None:
    raw = tmp_path / "raw" / "train"
    generate(raw, 150_000, "train", seed=1)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deepcvr",
            "transform",
            str(raw.parent),
            str(out),
            "--workers",
            "2",
            "--chunk-mb",
            "1",
            "--workspace",
            str(tmp_path / "ws"),
        ],
        start_new_session=True,  # its own process group, like a shell job: ^C reaches all
        # A shell starts background jobs (and CI runners may start us) with SIGINT ignored,
        # which a child inherits; a terminal's foreground job has the default handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not list(out.glob("train/sample_feature/part-*.parquet")):
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.05)
    children = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert b"Traceback" not in err
    psutil.wait_procs(children, timeout=30)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    parts = list(out.rglob("*.parquet"))
    assert parts
    for part in parts:  # every visible part is complete and readable
        pq.ParquetFile(part).metadata  # noqa: B018
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-") and p.suffix == ".parquet"]
    assert not (out / "train" / "_manifest.json").exists()  # the split is not marked complete
