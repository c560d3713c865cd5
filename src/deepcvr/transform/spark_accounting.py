"""Counters and accounting of the Spark engine, as the local engine's (accounting.py).

Line counters come from one small grouped aggregate per file, structure counters from the
tally the field decisions make of the cached structures of both files; the accounting
identities are then checked against the row counts in the footers of the Parquet just written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deepcvr import __version__
from deepcvr.schema import FEATURE_TABLE, ROW_TABLE
from deepcvr.transform.accounting import COUNTERS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from deepcvr.transform.spark_engine import Job


@dataclass
class Kind:
    """One raw file of a split on its way through the engine."""

    kind: str
    file: str
    facts: Any  # spark_sql.FileLines
    base: DataFrame  # every line, line-level reason (persisted)
    lines: DataFrame  # every line, final reason (duplicate / orphan joined in)
    structs: DataFrame | None = None  # parsed structures of accepted lines (persisted)
    counts: dict[str, int] = field(default_factory=dict)
    reasons: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # -> [rows, structs]

    def add(self, reason: str, action: str, rows: int, structures: int) -> None:
        got = self.reasons.setdefault((reason, action), [0, 0])
        got[0] += rows
        got[1] += structures


def count_lines(job: Job, k: Kind) -> None:
    """Line counters and line reject reasons of a file, in one small grouped aggregate."""
    from pyspark.sql import functions as F

    from deepcvr.transform import reasons as P

    job.phase(f"count lines of {k.file}")
    c = F.col
    flagged = c("reason").isNull() & (c("num") != c("structures"))
    rows = (
        k.lines.groupBy("reason", flagged.alias("flagged"))
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.sum("structures").alias("structures"),
            F.count_if(c("crlf")).alias("crlf"),
        )
        .collect()
    )
    counts = dict.fromkeys(
        ("lines", "raw_structures", "loaded_lines", "rejected_lines", "rejected_line_structures"),
        0,
    )
    counts |= {"flagged_lines": 0, "crlf_lines": 0}
    for r in rows:
        n, structures = int(r["n"]), int(r["structures"] or 0)
        counts["lines"] += n
        counts["raw_structures"] += structures
        counts["crlf_lines"] += int(r["crlf"])
        if r["reason"] is None:
            counts["loaded_lines"] += n
            if r["flagged"]:
                counts["flagged_lines"] += n
                k.add(P.FEATURE_NUM_MISMATCH, P.FLAGGED, n, 0)
        else:
            counts["rejected_lines"] += n
            counts["rejected_line_structures"] += structures
            k.add(r["reason"], P.REJECTED, n, structures)
    k.counts = counts


def count_structures(job: Job, kinds: list[Kind], tally: DataFrame, lost: DataFrame | None) -> None:
    """Structure counters of every file, from the (persisted, small) tally of the field
    decisions (spark_fields.structure_tally: files numbered as `kinds`)."""
    from pyspark.sql import functions as F

    from deepcvr.transform import reasons as P
    from deepcvr.transform import spark_structures as T

    job.phase("count structures")
    parsed = {i: k.structs for i, k in enumerate(kinds) if k.structs is not None}
    valid = dict.fromkeys(range(len(kinds)), 0)
    rejected = dict.fromkeys(range(len(kinds)), 0)
    for r in tally.groupBy("file", "rcode").agg(F.sum("n").alias("n")).collect():
        i, rcode, n = int(r["file"]), int(r["rcode"]), int(r["n"])
        if rcode == 0:
            valid[i] = n
        else:
            rejected[i] += n
            kinds[i].add(T.STRUCTURE_REASONS[rcode - 1], P.REJECTED, n, n)
    for i, k in enumerate(kinds):
        conflicts = 0
        if lost is not None and i in parsed:
            conflicts = int(T.lost_structures(parsed[i], lost).collect()[0]["n"] or 0)
            if conflicts:
                k.add(P.FEATURE_FIELD_CONFLICT, P.REJECTED, conflicts, conflicts)
        k.counts["loaded_structures"] = valid[i] - conflicts
        k.counts["structure_rejects"] = rejected[i] + conflicts


def account(job: Job, split: str, tmp: str, kinds: list[Kind]) -> tuple[dict[str, Any], list[str]]:
    """The local engine's accounting: line counts from the line pass, structure counts from
    the counting pass, checked against the Parquet footers the writing pass produced."""
    files: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    reasons: dict[tuple[str, str], list[int]] = {}
    for k in kinds:
        c = k.counts
        totals = {
            "bytes": k.facts.size,
            "lines": c["lines"],
            "raw_structures": c["raw_structures"],
            "loaded_lines": c["loaded_lines"],
            "loaded_structures": c["loaded_structures"],
            "rejected_lines": c["rejected_lines"],
            "rejected_structures": c["rejected_line_structures"] + c["structure_rejects"],
            "flagged_lines": c["flagged_lines"],
            "crlf_lines": c["crlf_lines"],
        }
        rows = job.fs.parquet_rows(f"{tmp}/{ROW_TABLE[k.kind]}")
        structures = job.fs.parquet_rows(f"{tmp}/{FEATURE_TABLE[k.kind]}")
        checks = {
            "lines = loaded + rejected": totals["lines"]
            == totals["loaded_lines"] + totals["rejected_lines"],
            "structures = loaded + rejected": totals["raw_structures"]
            == totals["loaded_structures"] + totals["rejected_structures"],
            # From the tiny per-partition aggregate, independent of the parse.
            "lines counted twice agree": k.facts.lines == totals["lines"],
            "Parquet rows = loaded lines": rows == totals["loaded_lines"],
            "Parquet structures = loaded structures": structures == totals["loaded_structures"],
        }
        problems += [f"{k.file}: {check} does not hold" for check, ok in checks.items() if not ok]
        files[k.file] = {"kind": k.kind, **totals, "checks": checks}
        for key, (n, structs) in k.reasons.items():
            got = reasons.setdefault(key, [0, 0])
            got[0] += n
            got[1] += structs
    rejects_rows = job.fs.parquet_rows(f"{tmp}/rejects")
    if rejects_rows != sum(n for n, _ in reasons.values()):
        problems.append(f"rejects: {rejects_rows:,} rows written, counters say otherwise")
    lines = sum(f["lines"] for f in files.values())
    rejected = sum(f["rejected_lines"] for f in files.values())
    summary = {
        "split": split,
        "engine": "spark",
        "version": __version__,
        "accounting": {n: sum(int(f[n]) for f in files.values()) for n in COUNTERS},
        "files": files,
        "rejects": {
            f"{reason} ({action})": {"rows": n, "structures": structs}
            for (reason, action), (n, structs) in sorted(reasons.items())
        },
        "reject_ratio": rejected / lines if lines else 0.0,
        "resumed_chunks": 0,
        "chunks": sum(k.facts.partitions for k in kinds),  # Spark input partitions
    }
    return summary, problems
