"""Benchmark the transform (raw CSV -> 3NF Parquet) against naive references, same input.

    python benchmarks/transform.py --samples 1000000 [--workers 2] [--skip-pandas] [--repeat 3]

Prints input MB, wall s, MB/s, structures/s and peak RSS of the whole process tree for:
deepcvr's local engine, a naive vectorised Polars script and a naive row-wise pandas parser,
plus the ratio of each to deepcvr, and an extrapolation to the full Ali-CCP (38 GB). With
--repeat N the runs alternate N times from scratch and the fastest of each counts (every run's
time is printed too).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from measure import ROOT, Measurement, best_of, print_runs, python, report, run

FULL_ALICCP_BYTES = 38e9


def make_input(data_dir: Path, samples: int, seed: int = 11) -> tuple[Path, int, int]:
    """Generated Ali-CCP-shaped input (cached by size): (raw dir, bytes, structures)."""
    sys.path.insert(0, str(ROOT / "src"))
    from deepcvr.synth import generate

    raw = data_dir / f"raw-{samples}"
    marker = raw / "structures.txt"
    if not marker.exists():
        shutil.rmtree(raw, ignore_errors=True)
        result = generate(raw / "train", samples, "train", seed=seed)
        marker.write_text(str(result.sample_structures + result.common_structures))
    size = sum(p.stat().st_size for p in (raw / "train").glob("*.csv"))
    return raw, size, int(marker.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--chunk-mb", type=float, default=None)
    parser.add_argument("--skip-pandas", action="store_true", help="skip the slow pandas run")
    parser.add_argument("--repeat", type=int, default=1, help="alternating runs; best counts")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "deepcvr-bench"
    )
    args = parser.parse_args()

    raw, size, structures = make_input(args.data_dir, args.samples)
    print(f"input: {args.samples:,} impressions, {size / 1e6:.1f} MB, {structures:,} structures")
    work = Path(tempfile.mkdtemp(prefix="deepcvr-bench-"))
    refs = ROOT / "benchmarks" / "references"
    deepcvr = [python(), "-m", "deepcvr", "-q", "transform", str(raw), str(work / "deepcvr")]
    deepcvr += ["--workspace", str(work / "ws")]
    if args.workers:
        deepcvr += ["--workers", str(args.workers)]
    if args.chunk_mb:
        deepcvr += ["--chunk-mb", str(args.chunk_mb)]
    commands = {
        "deepcvr (local engine)": deepcvr,
        "naive Polars script": [
            python(),
            str(refs / "naive_polars.py"),
            str(raw),
            str(work / "polars"),
        ],
    }
    if not args.skip_pandas:
        commands["naive pandas row-wise"] = [
            python(),
            str(refs / "naive_pandas.py"),
            str(raw),
            str(work / "pandas"),
        ]
    runs: dict[str, list[Measurement]] = {name: [] for name in commands}
    try:
        for _ in range(args.repeat):
            for name, cmd in commands.items():
                for out in ("deepcvr", "ws", "polars", "pandas"):  # no run resumes another's work
                    shutil.rmtree(work / out, ignore_errors=True)
                runs[name].append(run(name, cmd, size, structures))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [best_of(measured) for measured in runs.values()]
    report(rows, rows[0])
    print_runs(runs)
    for ref in rows[1:]:
        print(f"deepcvr is {ref.seconds / rows[0].seconds:.2f}x faster than the {ref.name}")
    estimate = FULL_ALICCP_BYTES / (rows[0].mb_per_s * 1e6)
    print(
        f"full-estimate: full Ali-CCP (38 GB, both splits) transform ~ {estimate / 60:.1f} min "
        f"at {rows[0].mb_per_s:.1f} MB/s"
    )


if __name__ == "__main__":
    main()
