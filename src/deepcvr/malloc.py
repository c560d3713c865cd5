"""glibc malloc kept from handing freed memory back to the kernel, for streaming processes.

deepcvr streams: buffers of a megabyte or more (decompressed blocks, chunks, joined lists) are
allocated and freed one after another. By default glibc maps such a block and unmaps it on
free, or trims the heap it came from, so every block faults its pages in afresh: a page fault
and a cleared page per 4 KiB. Kept instead, each block reuses the last one's pages, and memory
stays at the largest set of blocks alive at once. Decompressing 8 GB of CSVs (16 M impressions)
took 0.9-1.0 s of system time instead of 4.9-6.8 s, and 6.0-6.3 s instead of 9.1-11.5 s.
Both settings are needed: a fixed mmap threshold alone still trims, and a trim threshold alone
fixes the mmap threshold at 128 KiB (20.7 s of system time).
"""

from __future__ import annotations

import ctypes
import os

# The environment form (read by glibc when a process starts: spawned workers get it) and the
# mallopt parameter of each setting.
KEEP_FREED_MEMORY = {
    "MALLOC_MMAP_THRESHOLD_": str(1 << 30),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 31),
}
_MALLOPT = {"MALLOC_MMAP_THRESHOLD_": -3, "MALLOC_TRIM_THRESHOLD_": -1}  # M_MMAP_/M_TRIM_


def _user_set() -> bool:
    return any(name in os.environ for name in KEEP_FREED_MEMORY)


def keep_freed_memory_env() -> dict[str, str]:
    """The settings for the environment of a process about to start (none where the user set
    either: theirs is inherited as it is)."""
    return {} if _user_set() else dict(KEEP_FREED_MEMORY)


def keep_freed_memory() -> bool:
    """Apply the settings to this process; False where the C library is not glibc, or the user
    set either in the environment (their setting wins)."""
    if _user_set():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc: musl, macOS
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return all(mallopt(_MALLOPT[name], int(value)) for name, value in KEEP_FREED_MEMORY.items())
