"""Accounting: every raw line and structure is loaded or rejected, and the numbers prove it.

Per split and file: raw lines = loaded rows + rejected lines, and raw structures = loaded
structures + rejected structures. Loaded counts are read back from the Parquet footers, and the
line count from the chunk planner, so the identity checks the parser against independent counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow.parquet as pq

from deepcvr.errors import DataError

if TYPE_CHECKING:
    from deepcvr.transform.state import SplitState, TransformOptions

COUNTERS = (
    "bytes",
    "lines",
    "raw_structures",
    "loaded_lines",
    "loaded_structures",
    "rejected_lines",
    "rejected_structures",
    "flagged_lines",
    "crlf_lines",
)


def parquet_rows(paths: list[Any]) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def account_split(state: SplitState, options: TransformOptions) -> dict[str, Any]:
    from deepcvr.schema import FEATURE_TABLE, ROW_TABLE
    from deepcvr.transform.chunks import part_path

    files: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for kind in ("common", "skeleton"):
        specs = state.specs[kind]
        totals = {k: sum(int(state.stats[s.name][k]) for s in specs) for k in COUNTERS}
        planned_lines = 0
        if specs:
            last = specs[-1]
            planned_lines = last.first_line - 1 + int(state.stats[last.name]["lines"])
        rows = parquet_rows([part_path(state.out, ROW_TABLE[kind], s) for s in specs])
        structures = parquet_rows([part_path(state.out, FEATURE_TABLE[kind], s) for s in specs])
        name = state.files[kind].name
        checks = {
            "lines = loaded + rejected": totals["lines"]
            == totals["loaded_lines"] + totals["rejected_lines"],
            "structures = loaded + rejected": totals["raw_structures"]
            == totals["loaded_structures"] + totals["rejected_structures"],
            "lines counted twice agree": planned_lines == totals["lines"],
            "Parquet rows = loaded lines": rows == totals["loaded_lines"],
            "Parquet structures = loaded structures": structures == totals["loaded_structures"],
        }
        problems += [f"{name}: {check} does not hold" for check, ok in checks.items() if not ok]
        files[name] = {"kind": kind, **totals, "checks": checks}

    rejects_dir = state.out / "rejects"
    by_reason: dict[str, dict[str, int]] = {}
    if rejects_dir.exists() and any(rejects_dir.glob("*.parquet")):
        counts = (
            pl.scan_parquet(rejects_dir / "*.parquet")
            .group_by("reason", "action")
            .agg(pl.len().alias("rows"), pl.col("structures").sum())
            .sort("reason")
            .collect()
        )
        for row in counts.iter_rows(named=True):
            by_reason[f"{row['reason']} ({row['action']})"] = {
                "rows": row["rows"],
                "structures": int(row["structures"]),
            }
    lines = sum(f["lines"] for f in files.values())
    rejected = sum(f["rejected_lines"] for f in files.values())
    ratio = rejected / lines if lines else 0.0
    summary = {
        "split": state.split,
        "accounting": {k: sum(int(f[k]) for f in files.values()) for k in COUNTERS},
        "files": files,
        "rejects": by_reason,
        "reject_ratio": ratio,
        "resumed_chunks": state.resumed,
        "chunks": sum(len(v) for v in state.specs.values()),
    }
    if problems:
        raise DataError(f"{state.split}: accounting identity failed: {'; '.join(problems)}")
    if ratio > options.max_reject_ratio:
        raise DataError(
            f"{state.split}: {rejected:,} of {lines:,} lines rejected ({ratio:.3%}, limit "
            f"{options.max_reject_ratio:.3%}); see {state.out / 'rejects'} for file, line and "
            f"reason, or raise max_reject_ratio"
        )
    return summary
