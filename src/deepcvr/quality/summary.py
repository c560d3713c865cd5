"""A short summary of a loaded database: rows per table, CTR and CVR per split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

from deepcvr.errors import ConfigError, TargetError
from deepcvr.schema import MODEL, REJECTS

LABELS_SQL = (
    "SELECT split, count(*) AS impressions, sum(click) AS clicks, sum(conversion) AS conversions, "
    "sum(CASE WHEN click = 0 AND conversion = 1 THEN 1 ELSE 0 END) AS conversions_without_click "
    "FROM sample GROUP BY split ORDER BY split"
)


def summarize(target: str) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    url = make_url(target)
    if url.get_backend_name() != "duckdb":
        raise ConfigError(f"summary: unsupported target {url.get_backend_name()!r}")
    import duckdb

    path = Path(url.database or "")
    if not path.is_file():
        raise TargetError(f"{path}: database not found; run the load step first")
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = {
            t.name: con.execute(f"SELECT count(*) FROM {t.name}").fetchone()[0]  # type: ignore[index]
            for t in (*MODEL, REJECTS)
        }
        labels = con.execute(LABELS_SQL).fetchall()
    finally:
        con.close()
    splits = {}
    for split, n, clicks, conversions, orphan_conv in labels:
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
    for col in ("split", "impressions", "clicks", "CTR", "conversions", "CVR", "click=0,conv=1"):
        labels.add_column(col, justify="right")
    for split, s in summary["splits"].items():
        labels.add_row(
            split,
            f"{s['impressions']:,}",
            f"{s['clicks']:,}",
            f"{s['ctr']:.3%}",
            f"{s['conversions']:,}",
            f"{s['cvr']:.4%}",
            f"{s['conversions_without_click']:,}",
        )
    console.print(labels)
