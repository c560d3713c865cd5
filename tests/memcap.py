"""Run a command under a memory cap on its whole process tree (RSS, sampled every 10 ms).

setrlimit caps virtual address space, which Polars' allocator and thread stacks reserve far
beyond what is used, so it fails at random; the resident set is what must fit in RAM.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass

import psutil


@dataclass
class CappedRun:
    returncode: int
    peak_rss: int
    killed: bool
    stderr: str


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def run_capped(
    cmd: list[str], cap_bytes: int, env: dict[str, str] | None = None, timeout: float = 300
) -> CappedRun:
    popen = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc = psutil.Process(popen.pid)
    peak, killed = 0, False
    deadline = time.monotonic() + timeout
    while popen.poll() is None:
        try:
            rss = tree_rss(proc)
        except psutil.Error:
            break
        peak = max(peak, rss)
        if rss > cap_bytes or time.monotonic() > deadline:
            killed = True
            for p in [*proc.children(recursive=True), proc]:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            break
        time.sleep(0.01)
    _, err = popen.communicate()
    return CappedRun(popen.returncode, peak, killed, err.decode(errors="replace"))
