"""`deepcvr report`: one self-contained HTML profile of a loaded database.

All aggregation is DuckDB SQL over the 3NF tables (columnar; Python only formats the small
results); plots are inline SVG (quality/plots.py); the page loads nothing from anywhere.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from deepcvr import __version__
from deepcvr.aliccp import FIELDS
from deepcvr.fsutil import atomic_file
from deepcvr.quality import plots
from deepcvr.quality.sources import connect, duckdb_file
from deepcvr.schema import MODEL, REJECTS
from deepcvr.secrets import mask_url

SIDES = {  # kind -> (row table, feature table, key column)
    "sample": ("sample", "sample_feature", "sample_id"),
    "common": ("common_feature_group", "common_feature", "common_feature_index"),
}
ZIPF_POINTS_PER_DECADE = 24  # rank-frequency curves keep ~this many log-spaced ranks a decade
HIST_BINS = 60


def _q(con: duckdb.DuckDBPyConnection, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return con.execute(sql, list(args)).fetchall()


def _splits(con: duckdb.DuckDBPyConnection) -> list[str]:
    sql = "SELECT split FROM sample UNION SELECT split FROM common_feature_group ORDER BY 1"
    return [r[0] for r in _q(con, sql)]


def row_counts(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for t in (*MODEL, REJECTS):
        if "split" in t.column_names:
            out[t.name] = dict(_q(con, f"SELECT split, count(*) FROM {t.name} GROUP BY split"))
        out.setdefault(t.name, {})["*"] = _q(con, f"SELECT count(*) FROM {t.name}")[0][0]
    return out


def strata(con: duckdb.DuckDBPyConnection) -> dict[str, dict[tuple[int, int], int]]:
    out: dict[str, dict[tuple[int, int], int]] = {}
    sql = "SELECT split, click, conversion, count(*) FROM sample GROUP BY ALL"
    for split, click, conv, n in _q(con, sql):
        out.setdefault(split, {})[(int(click), int(conv))] = n
    return out


COVERAGE_SQL = """
SELECT split, field_id, count(*) AS rows_with, sum(n) AS structures FROM (
    SELECT t.split, t.{key}, f.field_id, count(*) AS n
    FROM {features} t JOIN feature f USING (feature_id) GROUP BY ALL
) GROUP BY ALL
"""


def coverage(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(side, split, field) -> (rows having the field, its structures); side is sample or
    common."""
    out = {}
    for side, (_rows, features, key) in SIDES.items():
        for split, field, rows_with, structures in _q(
            con, COVERAGE_SQL.format(key=key, features=features)
        ):
            out[(side, split, field)] = (rows_with, int(structures))
    return out


DIST_SQL = """
CREATE OR REPLACE TEMP TABLE dist_{kind} AS
SELECT r.split, coalesce(c.n, 0) AS n, count(*) AS rows
FROM {rows} r LEFT JOIN (
    SELECT split, {key}, count(*) AS n FROM {features} GROUP BY ALL
) c USING (split, {key})
GROUP BY ALL
"""


def structure_histograms(
    con: duckdb.DuckDBPyConnection,
) -> dict[tuple[str, str], list[tuple[int, int, int]]]:
    """(kind, split) -> bins (lo, hi, rows) of loaded structures per row, zero-count bins kept."""
    out = {}
    for kind, (rows, features, key) in SIDES.items():
        con.execute(DIST_SQL.format(kind=kind, rows=rows, key=key, features=features))
        for split, top in _q(con, f"SELECT split, max(n) FROM dist_{kind} GROUP BY split"):
            width = 1 if top < HIST_BINS else int(plots.nice_ticks(top, HIST_BINS)[1])
            counts = dict(
                _q(
                    con,
                    f"SELECT n // {width} * {width}, sum(rows)::BIGINT FROM dist_{kind} "
                    "WHERE split = ? GROUP BY 1",
                    split,
                )
            )
            out[(kind, split)] = [
                (lo, lo + width, int(counts.get(lo, 0))) for lo in range(0, top + 1, width)
            ]
    return out


# Frequencies of frequencies: ids sharing an occurrence count form one step of the curve, so
# the window functions run over a few thousand rows, not one row per feature id.
ZIPF_SQL = f"""
WITH freq AS (
    SELECT feature_id, count(*) AS freq FROM (
        SELECT feature_id FROM sample_feature UNION ALL SELECT feature_id FROM common_feature
    ) GROUP BY feature_id
), steps AS (
    SELECT f.field_id, q.freq, count(*) AS n
    FROM freq q JOIN feature f USING (feature_id) GROUP BY ALL
), ranked AS (
    SELECT field_id, freq, n,
           sum(n) OVER (PARTITION BY field_id ORDER BY freq DESC) AS last_rank,
           sum(n) OVER (PARTITION BY field_id) AS ids,
           sum(n * freq) OVER (PARTITION BY field_id) AS total,
           max(freq) OVER (PARTITION BY field_id) AS top
    FROM steps
)
SELECT field_id, (last_rank - n + 1)::BIGINT, last_rank::BIGINT, freq, ids::BIGINT,
       total::BIGINT, top
FROM ranked
QUALIFY last_rank = ids OR row_number() OVER (
    PARTITION BY field_id, floor(log10(last_rank) * {ZIPF_POINTS_PER_DECADE}) ORDER BY last_rank
) = 1
ORDER BY field_id, last_rank
"""


def zipf(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    """field -> distinct ids, structures, top id's occurrences and log-spaced (rank, frequency)
    points: the first and last rank of each occurrence count (a step of the curve)."""
    out: dict[str, dict[str, Any]] = {}
    for field, first, last, freq, ids, total, top in _q(con, ZIPF_SQL):
        info = out.setdefault(field, {"ids": ids, "total": total, "top": top, "points": []})
        info["points"] += [(first, freq)] if first == last else [(first, freq), (last, freq)]
    return out


SCENARIO_SQL = """
WITH g AS (
    SELECT t.feature_id AS scenario, s.split, count(*) AS impressions,
           coalesce(sum(s.click), 0)::BIGINT AS clicks,
           count(*) FILTER (WHERE s.click = 1 AND s.conversion = 1) AS conversions
    FROM sample_feature t
    JOIN feature f ON f.feature_id = t.feature_id AND f.field_id = '301'
    JOIN sample s ON s.split = t.split AND s.sample_id = t.sample_id
    GROUP BY ALL
)
SELECT * FROM g ORDER BY sum(impressions) OVER (PARTITION BY scenario) DESC, scenario, split
"""


def scenarios(con: duckdb.DuckDBPyConnection) -> list[tuple[int, str, int, int, int]]:
    """CTR/CVR by business scenario (field 301), the biggest scenarios first."""
    return [tuple(r) for r in _q(con, SCENARIO_SQL)]  # type: ignore[misc]


def rejects(con: duckdb.DuckDBPyConnection, examples: int) -> tuple[list[Any], list[Any]]:
    summary = _q(
        con,
        "SELECT split, file, reason, action, count(*), sum(structures)::BIGINT, min(line) "
        "FROM rejects GROUP BY ALL ORDER BY split, file, reason",
    )
    shown = _q(
        con,
        "SELECT reason, action, split, file, line, position, detail, raw FROM ("
        "  SELECT *, row_number() OVER (PARTITION BY reason ORDER BY split, file, line, "
        "  position) AS rn FROM rejects"
        ") WHERE rn <= ? ORDER BY reason, split, file, line, position",
        examples,
    )
    return summary, shown


def collect(
    con: duckdb.DuckDBPyConnection, accounting: list[dict[str, Any]], examples: int = 3
) -> dict[str, Any]:
    """Everything the page shows, as small Python values."""
    from deepcvr.quality.checks import accounting_checks

    reject_summary, reject_examples = rejects(con, examples)
    _checks, accounting_table = accounting_checks(con, accounting)
    return {
        "splits": _splits(con),
        "rows": row_counts(con),
        "strata": strata(con),
        "coverage": coverage(con),
        "hist": structure_histograms(con),
        "zipf": zipf(con),
        "scenarios": scenarios(con),
        "reject_summary": reject_summary,
        "reject_examples": reject_examples,
        "accounting": accounting_table,
    }


def write_report(
    target: str,
    output: Path,
    accounting: list[dict[str, Any]],
    examples: int = 3,
    parquet: Path | None = None,
) -> dict[str, Any]:
    """Query the database, render the page, write it atomically; returns a small summary."""
    from deepcvr.quality.report_sections import render

    con = connect(target, parquet)
    try:
        data = collect(con, accounting, examples)
    finally:
        con.close()
    data["meta"] = {
        "database": str(duckdb_file(target) or mask_url(target)),
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "version": __version__,
    }
    html = render(data)
    payload = html.encode("utf-8")
    with atomic_file(output) as tmp:
        tmp.write_bytes(payload)
    return {
        "output": str(output),
        "target": target,
        "bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "plots": html.count('<svg id="'),
        "tables": html.count('<table id="'),
    }


def expected_ids(splits: list[str]) -> list[str]:
    """The stable ids of every plot and table a report over `splits` holds."""
    ids = ["table-rows", "table-strata", "plot-strata", "table-coverage", "plot-coverage"]
    ids += [f"plot-hist-{kind}-{split}" for kind in SIDES for split in splits]
    ids += [f"plot-zipf-{f.field_id}" for f in FIELDS]
    ids += ["table-scenario", "plot-scenario-ctr", "plot-scenario-cvr"]
    ids += ["table-accounting", "table-rejects", "table-reject-examples"]
    return ids
