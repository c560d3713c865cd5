"""Benchmark end to end: archives -> loaded, keyed DuckDB, against the machine's limit.

    python benchmarks/end_to_end.py --samples 1000000 [--full-estimate] [--repeat 3]

The limit reference is what any tool must at least do: gunzip the archives (isal, to
/dev/null) plus the naive vectorised Polars parse of the raw CSVs. deepcvr runs its pipeline
(decompress -> transform -> load with keys and verification), staged and streamed
(`stage_raw: false`, no raw CSVs on disk). With --repeat N the runs alternate N times, each
from an empty workspace, and the fastest of each counts (every run's time is printed).

--full-estimate extrapolates the full Ali-CCP time from the measured MB/s. It adds a staged run
whose key threshold is scaled down with the input (default threshold x impressions / 85.3 M), so
every table gets the key treatment it would get at full scale: a table enforced at 1 M
impressions may be one verified by queries in the full dataset, and the two cost differently.

--skip-limit runs deepcvr alone, for inputs large enough that the estimate no longer carries
the fixed costs of a small run (start-up, worker spawn, per-file ramps, small tables' keys),
and too large for the limit reference: its naive parse holds whole files in memory (~4.5x their
size). Only the archives are generated then, not their CSVs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

from measure import ROOT, Measurement, best_of, print_runs, python, report, run

sys.path.insert(0, str(ROOT / "src"))  # deepcvr from this checkout, installed or not

FULL_ALICCP_RAW_BYTES = 38e9
FULL_ALICCP_IMPRESSIONS = 42_300_135 + 43_016_840

PIPELINE = """
name: bench
workspace: {ws}
tasks:
{tasks}
"""
STAGED = """  decompress: {{op: extract.decompress, with: {{source: "{src}"}}}}
  transform: {{op: transform.aliccp, needs: [decompress]}}
  load: {{op: load.database, needs: [transform], with: {{target: "duckdb:///{ws}/db.duckdb"{enforce}}}}}
"""
STREAMED = """  transform: {{op: transform.aliccp, with: {{input: "{src}", stage_raw: false}}}}
  load: {{op: load.database, needs: [transform], with: {{target: "duckdb:///{ws}/db.duckdb"{enforce}}}}}
"""
FULL_SCALE_KEYS = "staged, keys as at full scale"


def make_archives(data_dir: Path, samples: int, with_raw: bool = True) -> tuple[Path, int, int]:
    """Generated archives of both splits (cached by size): (dir, raw CSV bytes, structures).
    `with_raw`: their CSVs too, under raw/, for the naive parse."""
    from deepcvr.synth import generate

    src = data_dir / f"archives-{samples}"
    marker = src / "facts.txt"
    if not marker.exists():
        shutil.rmtree(src, ignore_errors=True)
        raw_bytes = structures = 0
        for split, seed in (("train", 1), ("test", 2)):
            res = generate(src, samples // 2, split, seed=seed, archive=True)
            raw_bytes += res.raw_bytes
            structures += res.sample_structures + res.common_structures
        marker.write_text(f"{raw_bytes} {structures}")
    if with_raw and not (src / "raw" / "done").exists():
        for split, seed in (("train", 1), ("test", 2)):  # the same seeds: the same bytes
            generate(src / "raw" / split, samples // 2, split, seed=seed)
        (src / "raw" / "done").touch()
    raw_bytes, structures = map(int, marker.read_text().split())
    return src, raw_bytes, structures


def task_seconds(ws: Path) -> str:
    """Where the time went, per task, from the run's metadata store."""
    with sqlite3.connect(ws / ".deepcvr" / "metadata.sqlite") as con:
        rows = con.execute(
            "SELECT task, duration_s, result_json FROM task_runs ORDER BY started_at"
        ).fetchall()
    parts = []
    for task, seconds, result in rows:
        part = f"{task} {seconds:.1f} s"
        tables = json.loads(result or "{}").get("tables")
        if task == "load" and tables:
            inserts = sum(t["seconds"] for t in tables.values())
            rest = seconds - inserts
            part += f" (tables and keys {inserts:.1f} s, checks and checkpoint {rest:.1f} s)"
        parts.append(part)
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000, help="impressions, both splits")
    parser.add_argument(
        "--enforce-keys-max-rows", type=int, default=None, help="default: the target's default"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "deepcvr-bench"
    )
    parser.add_argument("--full-estimate", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="alternating runs; best counts")
    parser.add_argument(
        "--skip-limit",
        action="store_true",
        help="no limit reference (for inputs whose files the naive parse cannot hold in memory)",
    )
    args = parser.parse_args()

    src, raw_bytes, structures = make_archives(args.data_dir, args.samples, not args.skip_limit)
    archives = sorted(src.glob("*.tar.gz"))
    print(
        f"input: {args.samples:,} impressions, {sum(a.stat().st_size for a in archives) / 1e6:.1f}"
        f" MB of archives, {raw_bytes / 1e6:.1f} MB raw, {structures:,} structures"
    )
    work = Path(tempfile.mkdtemp(prefix="deepcvr-e2e-"))
    gunzip = (
        "import isal.igzip as g, sys\nfor a in sys.argv[1:]:\n"
        "    with g.open(a) as f:\n        while f.read(1 << 24): pass\n"
    )
    naive = ROOT / "benchmarks" / "references" / "naive_polars.py"
    commands: dict[str, list[str]] = {}
    workspaces: dict[str, Path] = {}
    variants = [
        ("deepcvr end to end (staged)", STAGED, args.enforce_keys_max_rows),
        ("deepcvr end to end (streamed)", STREAMED, args.enforce_keys_max_rows),
    ]
    if args.full_estimate:
        from deepcvr.load.database import ENFORCE_KEYS_MAX_ROWS

        threshold = args.enforce_keys_max_rows or ENFORCE_KEYS_MAX_ROWS["duckdb"]
        scaled = threshold * args.samples // FULL_ALICCP_IMPRESSIONS
        variants.append((f"deepcvr end to end ({FULL_SCALE_KEYS})", STAGED, scaled))
        print(f"{FULL_SCALE_KEYS}: enforce_keys_max_rows {scaled:,} (full scale: {threshold:,})")
    for name, tasks, max_rows in variants:
        ws = work / name.split("(")[1].rstrip(")").replace(",", "").replace(" ", "-")
        yaml = work / f"{ws.name}.yaml"
        enforce = "" if max_rows is None else f", enforce_keys_max_rows: {max_rows}"
        yaml.write_text(PIPELINE.format(ws=ws, tasks=tasks.format(src=src, ws=ws, enforce=enforce)))
        commands[name] = [python(), "-m", "deepcvr", "-q", "run", str(yaml)]
        workspaces[name] = ws
    if not args.skip_limit:
        commands["isal gunzip to /dev/null"] = [python(), "-c", gunzip, *map(str, archives)]
        commands["naive Polars parse"] = [
            python(),
            str(naive),
            str(src / "raw"),
            str(work / "naive"),
        ]
    runs: dict[str, list[Measurement]] = {name: [] for name in commands}
    breakdowns: dict[str, list[str]] = {name: [] for name in workspaces}
    try:
        for _ in range(args.repeat):
            for name, cmd in commands.items():
                for out in (*workspaces.values(), work / "naive"):  # every run from scratch
                    shutil.rmtree(out, ignore_errors=True)
                runs[name].append(run(name, cmd, raw_bytes, structures))
                if name in workspaces:
                    breakdowns[name].append(task_seconds(workspaces[name]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {name: best_of(measured) for name, measured in runs.items()}
    ours = [best[name] for name in workspaces]
    if args.skip_limit:
        report(ours, ours[0])
    else:
        unzip, naive_run = best["isal gunzip to /dev/null"], best["naive Polars parse"]
        limit = Measurement(
            "limit: gunzip + naive parse",
            unzip.seconds + naive_run.seconds,
            max(unzip.peak_rss, naive_run.peak_rss),
            raw_bytes,
            structures,
        )
        report([*best.values(), limit], limit)
    print_runs(runs)
    for name, lines in breakdowns.items():
        fastest = min(range(len(lines)), key=lambda i: runs[name][i].seconds)
        print(f"{name}: {lines[fastest]}")
    if not args.skip_limit:
        for m in ours:
            print(f"{m.name}: {m.seconds / limit.seconds:.2f}x the time of the limit reference")
    if args.full_estimate:
        for m in ours:
            minutes = FULL_ALICCP_RAW_BYTES / (m.mb_per_s * 1e6) / 60
            print(
                f"full-estimate: {m.name}: full Ali-CCP (38 GB raw, both splits) ~ "
                f"{minutes:.1f} min at {m.mb_per_s:.1f} MB/s"
            )


if __name__ == "__main__":
    main()
