"""A short summary of a loaded database: rows per table, CTR and CVR per split."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

from deepcvr.schema import MODEL, REJECTS

LABELS_SQL = (
    "SELECT split, count(*) AS impressions, sum(click) AS clicks, sum(conversion) AS conversions, "
    "sum(CASE WHEN click = 0 AND conversion = 1 THEN 1 ELSE 0 END) AS conversions_without_click "
    "FROM sample GROUP BY split ORDER BY split"
)


def summarize(target: str) -> dict[str, Any]:
    """Rows per table and label rates per split of a loaded DuckDB, MySQL or PostgreSQL target."""
    from deepcvr.load.database import open_query

    with open_query(target) as query:
        rows = {
            t.name: int(query(f"SELECT count(*) FROM {t.name}")[0][0]) for t in (*MODEL, REJECTS)
        }
        labels = query(LABELS_SQL)
    splits = {}
    for split, n, clicks_, conversions_, orphan_conv in labels:
        # MySQL returns sum() as DECIMAL: make every count an int before dividing.
        clicks, conversions = int(clicks_), int(conversions_)
        splits[split] = {
            "impressions": n,
            "clicks": int(clicks),
            "conversions": int(conversions),
            "ctr": clicks / n if n else 0.0,
            "cvr": conversions / n if n else 0.0,
            "cvr_given_click": conversions / clicks if clicks else 0.0,
            "conversions_without_click": int(orphan_conv),
        }
    return {"rows": rows, "splits": splits}


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(stderr=False)
    tables = RichTable(title="deepcvr: tables")
    tables.add_column("table")
    tables.add_column("rows", justify="right")
    for name, n in summary["rows"].items():
        tables.add_row(name, f"{n:,}")
    console.print(tables)
    labels = RichTable(title="deepcvr: labels per split")
    # CVR per click (ESMM's post-click CVR) and per impression (CTCVR), named as in the report.
    columns = (
        "split",
        "impressions",
        "clicks",
        "CTR",
        "conversions",
        "CVR (per click)",
        "CTCVR (per impr.)",
        "click=0,conv=1",
    )
    for col in columns:
        labels.add_column(col, justify="right")
    for split, s in summary["splits"].items():
        labels.add_row(
            split,
            f"{s['impressions']:,}",
            f"{s['clicks']:,}",
            f"{s['ctr']:.3%}",
            f"{s['conversions']:,}",
            f"{s['cvr_given_click']:.3%}",
            f"{s['cvr']:.4%}",
            f"{s['conversions_without_click']:,}",
        )
    console.print(labels)
