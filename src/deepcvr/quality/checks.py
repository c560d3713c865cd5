"""Checks after load: keys, label rates, the (0,1) funnel anomaly, feature counts, accounting.

Every check is a SQL query on the loaded database (plus the transform's accounting and, when
available, one regex pass over the raw skeleton). Errors fail the op; warnings are reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb
from rich.console import Console
from rich.table import Table as RichTable

from deepcvr.load.verify import KEYS_TABLE, run_checks
from deepcvr.quality.sources import (
    NOCLICK_CONVERSION_SQL,
    count_noclick_conversions,
    file_kind,
    raw_skeleton,
)
from deepcvr.schema import FEATURE_TABLE, MODEL, ROW_TABLE

Level = Literal["error", "warning"]

# The flag of a kept line whose declared feature_num differs from its structures; the
# difference lives only in the detail text written by the parser.
MISMATCH_DETAIL = r"declared (-?[0-9]+) structures, found ([0-9]+)"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    level: Level = "error"
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "ok" if self.ok else "FAIL" if self.level == "error" else "warn"


@dataclass(frozen=True)
class Bounds:
    """Plausible label rates. A split below the minimum counts gets warnings, not errors:
    a rate measured on a few rows says little."""

    ctr_min: float = 0.001
    ctr_max: float = 0.2
    cvr_min: float = 0.0005
    cvr_max: float = 0.2
    min_impressions: int = 1000
    min_clicks: int = 1000


def _rows(con: duckdb.DuckDBPyConnection, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return con.execute(sql, list(args)).fetchall()


def enforced_keys(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Tables whose primary key the database enforces (from the load's keys catalogue)."""
    try:
        rows = _rows(
            con, f"SELECT table_name FROM {KEYS_TABLE} WHERE kind = 'PRIMARY KEY' AND enforced"
        )
    except duckdb.CatalogException:
        return set()
    return {r[0] for r in rows}


def key_checks(con: duckdb.DuckDBPyConnection) -> list[Check]:
    """Primary and foreign keys, by the load's own verification queries; an enforced primary
    key is trusted (its index forbids duplicates). Row counts are left to the accounting
    checks, which compare them per split and file with the transform's counts."""
    counts = {t.name: _rows(con, f"SELECT count(*) FROM {t.name}")[0][0] for t in MODEL}
    results, _ = run_checks(
        lambda sql: _rows(con, sql), counts, enforced_keys(con), trust_enforced_keys=True
    )
    return [
        Check(f"keys: {r['name']}", bool(r["ok"]), r["detail"])
        for r in results
        if not r["name"].endswith(": row count")
    ]


LABELS_SQL = """
SELECT split, count(*) AS impressions, coalesce(sum(click), 0) AS clicks,
       count(*) FILTER (WHERE click = 1 AND conversion = 1) AS click_conversions,
       count(*) FILTER (WHERE click = 0 AND conversion = 1) AS noclick_conversions
FROM sample GROUP BY split ORDER BY split
"""


def label_checks(
    con: duckdb.DuckDBPyConnection,
    bounds: Bounds,
    raw_dir: Path | None = None,
    raw_bytes: dict[str, int] | None = None,
) -> list[Check]:
    """CTR = clicks / impressions; CVR = conversions after a click / clicks (ESMM's pCVR)."""
    checks = []
    for split, n, clicks, conv, noclick in _rows(con, LABELS_SQL):
        ctr = clicks / n if n else None
        cvr = conv / clicks if clicks else None
        level: Level = "error" if n >= bounds.min_impressions else "warning"
        checks.append(
            _rate(f"{split}: CTR", ctr, bounds.ctr_min, bounds.ctr_max, level, n, "impressions")
        )
        level = "error" if clicks >= bounds.min_clicks else "warning"
        checks.append(
            _rate(f"{split}: CVR", cvr, bounds.cvr_min, bounds.cvr_max, level, clicks, "clicks")
        )
        # Kept and flagged, never dropped: a warning so that it shows, not a failure.
        checks.append(
            Check(
                f"{split}: click 0, conversion 1",
                noclick == 0,
                f"{noclick:,} impressions converted without a click (kept)",
                "warning",
                {"count": noclick},
            )
        )
        raw = raw_skeleton(raw_dir, split)
        if raw is not None:
            expected = (raw_bytes or {}).get(raw.name)
            if expected is not None and raw.stat().st_size != expected:
                checks.append(
                    Check(
                        f"{split}: click 0, conversion 1 in raw",
                        False,
                        f"{raw} is not the file that was transformed ({raw.stat().st_size:,} "
                        f"bytes, transformed {expected:,}); not compared",
                        "warning",
                    )
                )
                continue
            checks.append(_noclick_vs_raw(con, split, raw, noclick))
    return checks


def _rate(
    name: str, rate: float | None, lo: float, hi: float, level: Level, base: int, of: str
) -> Check:
    if rate is None:
        return Check(name, False, f"undefined: no {of}", level)
    ok = lo <= rate <= hi
    where = "within" if ok else "outside"
    few = "" if level == "error" else f", only {base:,} {of}: not enforced"
    return Check(
        name, ok, f"{rate:.4%} {where} [{lo:.4%}, {hi:.4%}]{few}", level, {"rate": rate, of: base}
    )


def _noclick_vs_raw(con: duckdb.DuckDBPyConnection, split: str, raw: Path, loaded: int) -> Check:
    """Raw (0,1) lines = loaded (0,1) rows + rejected (0,1) lines: none silently dropped."""
    in_raw = count_noclick_conversions(raw)
    rejected = _rows(
        con,
        "SELECT count(*) FROM rejects WHERE split = ? AND file = ? AND position IS NULL "
        "AND action = 'rejected' AND regexp_matches(raw, ?)",
        split,
        raw.name,
        NOCLICK_CONVERSION_SQL,
    )[0][0]
    ok = in_raw == loaded + rejected
    return Check(
        f"{split}: click 0, conversion 1 in raw",
        ok,
        f"raw {in_raw:,} {'=' if ok else '!='} loaded {loaded:,} + rejected {rejected:,}",
        "error",
        {"raw": in_raw, "loaded": loaded, "rejected": rejected},
    )


FEATURE_COUNT_SQL = """
WITH declared AS (
    SELECT split, coalesce(sum(num_features), 0) AS declared FROM {rows} GROUP BY split
), loaded AS (
    SELECT split, count(*) AS loaded FROM {features} GROUP BY split
), explained AS (
    SELECT split,
           coalesce(sum(structures) FILTER (WHERE position IS NOT NULL AND action = 'rejected'),
                    0) AS rejected,
           count(*) FILTER (WHERE action = 'flagged' AND reason = 'feature_num_mismatch')
               AS flagged,
           coalesce(sum(TRY_CAST(regexp_extract(detail, '{pattern}', 1) AS BIGINT)
                        - TRY_CAST(regexp_extract(detail, '{pattern}', 2) AS BIGINT))
                    FILTER (WHERE action = 'flagged' AND reason = 'feature_num_mismatch'),
                    0) AS mismatch
    FROM rejects WHERE file = '{prefix}' || split || '.csv' GROUP BY split
)
SELECT d.split, d.declared, coalesce(l.loaded, 0), coalesce(e.rejected, 0),
       coalesce(e.flagged, 0), coalesce(e.mismatch, 0)
FROM declared d LEFT JOIN loaded l USING (split) LEFT JOIN explained e USING (split)
ORDER BY d.split
"""


def feature_count_checks(con: duckdb.DuckDBPyConnection) -> list[Check]:
    """Declared feature_num vs feature rows, per split and table. A gap is allowed only where
    rejects explain it: declared - loaded = structures rejected from kept lines + the declared
    minus found structures of lines flagged feature_num_mismatch."""
    checks = []
    for kind, prefix in (("skeleton", "sample_skeleton_"), ("common", "common_features_")):
        sql = FEATURE_COUNT_SQL.format(
            rows=ROW_TABLE[kind],
            features=FEATURE_TABLE[kind],
            pattern=MISMATCH_DETAIL,
            prefix=prefix,
        )
        for split, declared, loaded, rejected, flagged, mismatch in _rows(con, sql):
            gap = declared - loaded
            ok = gap == rejected + mismatch
            values = {"declared": declared, "loaded": loaded, "rejected": rejected}
            detail = (
                f"declared {declared:,} - loaded {loaded:,} = {gap:,} {'=' if ok else '!='} "
                f"rejected structures {rejected:,} + mismatch of {flagged:,} flagged line(s) "
                f"{mismatch:,}"
            )
            name = f"{split}: {FEATURE_TABLE[kind]} rows vs declared feature_num"
            checks.append(Check(name, ok, detail, "error", values | {"mismatch": mismatch}))
    return checks


DB_COUNTS_SQL = """
SELECT split, file,
       count(*) FILTER (WHERE action = 'rejected' AND position IS NULL) AS rejected_lines,
       coalesce(sum(structures) FILTER (WHERE action = 'rejected'), 0) AS rejected_structures,
       count(*) FILTER (WHERE action = 'flagged') AS flagged_lines
FROM rejects GROUP BY ALL
"""


def db_counts(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], dict[str, int]]:
    """(split, kind) -> rows, structures; (split, file) -> reject counts, from the database."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for kind in ("skeleton", "common"):
        for table, key in ((ROW_TABLE[kind], "rows"), (FEATURE_TABLE[kind], "structures")):
            for split, n in _rows(con, f"SELECT split, count(*) FROM {table} GROUP BY split"):
                out.setdefault((split, kind), {})[key] = n
    for split, file, lines, structures, flagged in _rows(con, DB_COUNTS_SQL):
        out[(split, file)] = {
            "rejected_lines": lines,
            "rejected_structures": int(structures),
            "flagged_lines": flagged,
        }
    return out


def accounting_checks(
    con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]]
) -> tuple[list[Check], list[dict[str, Any]]]:
    """The transform's identity (lines = loaded + rejected, same for structures), re-proved
    with the database's row counts and rejects table; returns checks and the table rows."""
    db = db_counts(con)
    loaded_splits = sorted({s for (s, key) in db if key in ("skeleton", "common")})
    checks, table = [], []
    for row in rows:
        split, file = row["split"], row["file"]
        kinds = [row["kind"]] if row["kind"] else ["skeleton", "common"]
        files = [file] if row["kind"] else [f for (s, f) in db if s == split and file_kind(s, f)]
        loaded = sum(db.get((split, k), {}).get("rows", 0) for k in kinds)
        structures = sum(db.get((split, k), {}).get("structures", 0) for k in kinds)
        rej = {
            k: sum(db.get((split, f), {}).get(k, 0) for f in files)
            for k in ("rejected_lines", "rejected_structures", "flagged_lines")
        }
        problems = []
        if row["lines"] != row["loaded_lines"] + row["rejected_lines"]:
            problems.append("transform: lines != loaded + rejected")
        if row["raw_structures"] != row["loaded_structures"] + row["rejected_structures"]:
            problems.append("transform: structures != loaded + rejected")
        if row["lines"] != loaded + rej["rejected_lines"]:
            problems.append(
                f"raw lines {row['lines']:,} != database rows {loaded:,} + rejected lines "
                f"{rej['rejected_lines']:,}"
            )
        if row["raw_structures"] != structures + rej["rejected_structures"]:
            problems.append(
                f"raw structures {row['raw_structures']:,} != database structures "
                f"{structures:,} + rejected {rej['rejected_structures']:,}"
            )
        if row["flagged_lines"] != rej["flagged_lines"]:
            problems.append(f"flagged {row['flagged_lines']:,} != {rej['flagged_lines']:,}")
        ok = not problems
        detail = "; ".join(problems) or (
            f"{row['lines']:,} lines = {loaded:,} loaded + {rej['rejected_lines']:,} rejected; "
            f"{row['raw_structures']:,} structures = {structures:,} + "
            f"{rej['rejected_structures']:,}"
        )
        checks.append(Check(f"{split}: accounting {file}", ok, detail, "error", dict(row)))
        table.append(row | {"db_rows": loaded, "db_structures": structures, "ok": ok})
    for split in loaded_splits:
        if not any(r["split"] == split for r in rows):
            checks.append(
                Check(
                    f"{split}: accounting",
                    False,
                    "no transform manifest or metadata record for this split; not proved",
                    "warning",
                )
            )
    return checks, table


def run_all(
    con: duckdb.DuckDBPyConnection,
    accounting: list[dict[str, Any]],
    bounds: Bounds | None = None,
    raw_dir: Path | None = None,
) -> tuple[list[Check], list[dict[str, Any]]]:
    bounds = bounds or Bounds()
    raw_bytes = {r["file"]: r["bytes"] for r in accounting if r["kind"] == "skeleton"}
    checks = key_checks(con)
    checks += label_checks(con, bounds, raw_dir, raw_bytes)
    checks += feature_count_checks(con)
    acc_checks, table = accounting_checks(con, accounting)
    return checks + acc_checks, table


def check_dict(check: Check) -> dict[str, Any]:
    return asdict(check) | {"status": check.status}


STATUS_STYLE = {"ok": "green", "FAIL": "bold red", "warn": "yellow"}


def print_checks(
    checks: list[Check], table: list[dict[str, Any]], console: Console | None = None
) -> None:
    console = console or Console()
    out = RichTable(title="deepcvr: quality checks", title_justify="left")
    for col in ("check", "level", "status", "detail"):
        out.add_column(col, overflow="fold")
    for c in checks:
        style = STATUS_STYLE[c.status]
        out.add_row(c.name, c.level, f"[{style}]{c.status}[/]", c.detail)
    console.print(out)
    print_accounting(table, console)


ACCOUNTING_COLUMNS = (
    ("split", "split"),
    ("file", "file"),
    ("lines", "raw lines"),
    ("loaded_lines", "loaded"),
    ("rejected_lines", "rejected"),
    ("flagged_lines", "flagged"),
    ("crlf_lines", "CRLF"),
    ("raw_structures", "raw structures"),
    ("loaded_structures", "loaded"),
    ("rejected_structures", "rejected"),
    ("db_rows", "DB rows"),
    ("db_structures", "DB structures"),
)


def print_accounting(table: list[dict[str, Any]], console: Console) -> None:
    out = RichTable(title="deepcvr: accounting (raw = loaded + rejected)", title_justify="left")
    for _key, label in ACCOUNTING_COLUMNS:
        out.add_column(label, justify="left" if _key in ("split", "file") else "right")
    out.add_column("identity")
    for row in table:
        cells = [
            row[k] if isinstance(row[k], str) else f"{row[k]:,}" for k, _ in ACCOUNTING_COLUMNS
        ]
        out.add_row(*cells, "[green]holds[/]" if row["ok"] else "[bold red]FAILS[/]")
    console.print(out)
