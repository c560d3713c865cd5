"""glibc malloc settings: freed blocks are kept for the next one, unless the user chose."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from deepcvr import malloc

# Megabyte blocks allocated and freed in turn, in a thread (its own malloc arena, which glibc
# trims) and in the main thread, as decompress does; prints the page faults they took.
CHURN = textwrap.dedent(
    """
    import resource, sys, threading
    from deepcvr.malloc import keep_freed_memory
    applied = keep_freed_memory() if sys.argv[1] == "keep" else None
    def churn():
        for _ in range(50):
            blocks = [b"x" * (1 << 20) for _ in range(4)]
            joined = b"".join(blocks)
            del blocks, joined
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    worker = threading.Thread(target=churn)
    worker.start()
    worker.join()
    churn()
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(mode: str, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if k not in malloc.KEEP_FREED_MEMORY}
    out = subprocess.run(
        [sys.executable, "-c", CHURN, mode],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    applied, kept = _faults("keep")
    _, default = _faults("default")
    assert applied == "True"
    # 400 blocks of 1 MiB: up to 256 faults each when every block takes fresh pages (~105,000
    # by default on Debian 12's glibc 2.36, ~4,000 kept).
    assert kept < default / 5


@pytest.mark.parametrize("name", sorted(malloc.KEEP_FREED_MEMORY))
def test_a_setting_the_user_made_wins(name: str) -> None:
    applied, _ = _faults("keep", **{name: "4096"})
    assert applied == "False"


def test_child_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in malloc.KEEP_FREED_MEMORY:
        monkeypatch.delenv(name, raising=False)
    assert malloc.keep_freed_memory_env() == malloc.KEEP_FREED_MEMORY
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    assert malloc.keep_freed_memory_env() == {}
