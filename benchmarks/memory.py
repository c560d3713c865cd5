"""Benchmark memory: the transform at two input sizes 4x apart; memory must not grow with input.

python benchmarks/memory.py --samples 1000000   # runs 1 M and 4 M impressions
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from measure import python, run
from transform import make_input


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000, help="the smaller size")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "deepcvr-bench"
    )
    args = parser.parse_args()
    results = []
    for samples in (args.samples, 4 * args.samples):
        raw, size, structures = make_input(args.data_dir, samples)
        work = Path(tempfile.mkdtemp(prefix="deepcvr-mem-"))
        try:
            m = run(
                f"transform {samples:,}",
                [
                    python(),
                    "-m",
                    "deepcvr",
                    "-q",
                    "transform",
                    str(raw),
                    str(work / "out"),
                    "--workspace",
                    str(work / "ws"),
                ],
                size,
                structures,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        results.append(m)
        print(
            f"{m.name:<24} input {size / 1e6:8.1f} MB  wall {m.seconds:7.2f} s  "
            f"{m.mb_per_s:6.1f} MB/s  peak RSS (tree) {m.peak_rss / 1e6:7.0f} MB"
        )
    small, large = results
    print(
        f"input x{large.input_bytes / small.input_bytes:.2f}: peak RSS x"
        f"{large.peak_rss / small.peak_rss:.2f} (target <= 1.2), wall x"
        f"{large.seconds / small.seconds:.2f} (target <= 4.4)"
    )


if __name__ == "__main__":
    main()
