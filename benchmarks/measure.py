"""Shared benchmark plumbing: run a command, sample the RSS of its whole process tree."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Measurement:
    name: str
    seconds: float
    peak_rss: int  # bytes, summed over the process and all its children at the worst moment
    input_bytes: int
    structures: int
    output: str = ""  # what the command printed (stdout and stderr)

    @property
    def mb_per_s(self) -> float:
        return self.input_bytes / 1e6 / self.seconds

    @property
    def structures_per_s(self) -> float:
        return self.structures / self.seconds


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def run(
    name: str, cmd: list[str], input_bytes: int, structures: int, env: dict[str, str] | None = None
) -> Measurement:
    """Run `cmd` to completion; fail loudly if it fails (a benchmark of a crash is no figure)."""
    start = time.perf_counter()
    popen = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    proc = psutil.Process(popen.pid)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            with contextlib.suppress(psutil.Error):
                peak = max(peak, tree_rss(proc))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = popen.communicate()
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    if popen.returncode != 0:
        sys.stderr.write(output.decode(errors="replace")[-4000:])
        raise SystemExit(f"{name} failed with exit code {popen.returncode}")
    return Measurement(
        name, seconds, peak, input_bytes, structures, output.decode(errors="replace")
    )


def report(rows: list[Measurement], baseline: Measurement) -> None:
    header = (
        f"{'run':<28}{'input MB':>10}{'wall s':>9}{'MB/s':>9}{'Mstruct/s':>11}"
        f"{'peak RSS MB':>13}{'  speed vs ' + baseline.name:>30}"
    )
    print(header)
    print("-" * len(header))
    for m in rows:
        ratio = baseline.seconds / m.seconds
        print(
            f"{m.name:<28}{m.input_bytes / 1e6:>10.1f}{m.seconds:>9.2f}{m.mb_per_s:>9.1f}"
            f"{m.structures_per_s / 1e6:>11.2f}{m.peak_rss / 1e6:>13.0f}{ratio:>29.2f}x"
        )


def python() -> str:
    return sys.executable


def best_of(runs: list[Measurement]) -> Measurement:
    """The fastest of repeated runs of one command (its peak RSS is the worst of them): on a
    shared machine, load spikes only ever slow a run down, so the minimum is the figure."""
    best = min(runs, key=lambda m: m.seconds)
    return Measurement(
        best.name,
        best.seconds,
        max(m.peak_rss for m in runs),
        best.input_bytes,
        best.structures,
    )


def print_runs(runs: dict[str, list[Measurement]]) -> None:
    """Every measured wall time, so the best-of figures can be read against their spread."""
    for name, measured in runs.items():
        if len(measured) > 1:
            walls = ", ".join(f"{m.seconds:.2f}" for m in measured)
            print(f"runs of {name}: {walls} s")
