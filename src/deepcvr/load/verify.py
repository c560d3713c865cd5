"""Verification after a load, in SQL every target speaks: row counts, key uniqueness, foreign keys.

Keys too large to enforce with an index are still declared (in the `deepcvr_keys` table) and
proved by these queries; the results go to the metadata store and the load summary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from deepcvr.schema import MODEL

KEYS_TABLE = "deepcvr_keys"
KEYS_COLUMNS = (
    "table_name",
    "kind",
    "columns",
    "ref_table",
    "ref_columns",
    "enforced",
    "violations",
)

Query = Callable[[str], Sequence[tuple[Any, ...]]]


def run_checks(
    query: Query, expected_rows: dict[str, int], enforced: set[str]
) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    """Run every check; return (check results, rows for the keys catalogue table)."""
    checks: list[dict[str, Any]] = []
    catalogue: list[tuple[Any, ...]] = []
    for table in MODEL:
        rows = query(f"SELECT count(*) FROM {table.name}")[0][0]
        expected = expected_rows[table.name]
        checks.append(
            {
                "name": f"{table.name}: row count",
                "ok": rows == expected,
                "detail": f"{rows:,} rows, expected {expected:,}",
            }
        )
        pk = ", ".join(table.primary_key)
        dups = query(
            f"SELECT count(*) FROM (SELECT {pk} FROM {table.name} GROUP BY {pk} "
            "HAVING count(*) > 1) d"
        )[0][0]
        checks.append(
            {
                "name": f"{table.name}: primary key ({pk})",
                "ok": dups == 0,
                "detail": f"{dups:,} duplicate keys",
            }
        )
        catalogue.append((table.name, "PRIMARY KEY", pk, None, None, table.name in enforced, dups))
        for fk in table.foreign_keys:
            cond = " AND ".join(
                f"p.{r} = c.{col}" for col, r in zip(fk.columns, fk.ref_columns, strict=True)
            )
            orphans = query(
                f"SELECT count(*) FROM {table.name} c WHERE NOT EXISTS "
                f"(SELECT 1 FROM {fk.ref_table} p WHERE {cond})"
            )[0][0]
            cols = ", ".join(fk.columns)
            checks.append(
                {
                    "name": f"{table.name}: foreign key ({cols}) -> {fk.ref_table}",
                    "ok": orphans == 0,
                    "detail": f"{orphans:,} rows without a parent",
                }
            )
            catalogue.append(
                (
                    table.name,
                    "FOREIGN KEY",
                    cols,
                    fk.ref_table,
                    ", ".join(fk.ref_columns),
                    table.name in enforced and fk.ref_table in enforced,
                    orphans,
                )
            )
    return checks, catalogue
