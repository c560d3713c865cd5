"""Verification after a load, in SQL every target speaks: row counts, key uniqueness, foreign keys.

Keys too large to enforce with an index are still declared (in the `deepcvr_keys` table) and
proved by these queries; the results go to the metadata store and the load summary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from deepcvr.schema import MODEL, REJECTS, ForeignKey, Table

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
    query: Query,
    expected_rows: dict[str, int],
    enforced: set[str],
    names: Mapping[str, str] | None = None,
    trust_enforced_keys: bool = False,
    trust_enforced_foreign_keys: bool = False,
    proves_unique: Callable[[Table, str], bool] | None = None,
    proves_references: Callable[[Table, ForeignKey, str, str], bool] | None = None,
) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    """Run every check; return (check results, rows for the keys catalogue table).

    `names` maps a model table to the table actually queried (a staging table before the swap).
    With `trust_enforced_keys`, an enforced primary key is not re-proved by a GROUP BY query:
    the server's unique index already guarantees it, and the query costs a full sort. Likewise
    `trust_enforced_foreign_keys`, for a target that checked every row against its parent (not
    one that added the constraint with its checks switched off). `proves_unique(table, name)` is a
    cheaper test that returns True only if the key is unique; when it cannot tell, the exact
    GROUP BY query counts the duplicates. `proves_references(table, fk, name, parent_name)` is
    the same for a foreign key: True only if no row lacks its parent, else the anti-join counts.
    """
    names = names or {}
    checks: list[dict[str, Any]] = []
    catalogue: list[tuple[Any, ...]] = []
    for table in MODEL:
        name = names.get(table.name, table.name)
        checks.append(_count_check(query, table.name, name, expected_rows[table.name]))
        pk = ", ".join(table.primary_key)
        if trust_enforced_keys and table.name in enforced:
            dups, detail = 0, "enforced by the PRIMARY KEY constraint"
        elif proves_unique and proves_unique(table, name):
            dups, detail = 0, "0 duplicate keys"
        else:
            dups = query(
                f"SELECT count(*) FROM (SELECT {pk} FROM {name} GROUP BY {pk} "
                "HAVING count(*) > 1) d"
            )[0][0]
            detail = f"{dups:,} duplicate keys"
        checks.append(
            {"name": f"{table.name}: primary key ({pk})", "ok": dups == 0, "detail": detail}
        )
        catalogue.append((table.name, "PRIMARY KEY", pk, None, None, table.name in enforced, dups))
        for fk in table.foreign_keys:
            cond = " AND ".join(
                f"p.{r} = c.{col}" for col, r in zip(fk.columns, fk.ref_columns, strict=True)
            )
            enforced_fk = table.name in enforced and fk.ref_table in enforced
            parent = names.get(fk.ref_table, fk.ref_table)
            if trust_enforced_foreign_keys and enforced_fk:
                orphans, detail = 0, "enforced by the FOREIGN KEY constraint"
            elif proves_references and proves_references(table, fk, name, parent):
                orphans, detail = 0, "0 rows without a parent"
            else:
                orphans = query(
                    f"SELECT count(*) FROM {name} c WHERE NOT EXISTS "
                    f"(SELECT 1 FROM {parent} p WHERE {cond})"
                )[0][0]
                detail = f"{orphans:,} rows without a parent"
            cols = ", ".join(fk.columns)
            checks.append(
                {
                    "name": f"{table.name}: foreign key ({cols}) -> {fk.ref_table}",
                    "ok": orphans == 0,
                    "detail": detail,
                }
            )
            catalogue.append(
                (
                    table.name,
                    "FOREIGN KEY",
                    cols,
                    fk.ref_table,
                    ", ".join(fk.ref_columns),
                    enforced_fk,
                    orphans,
                )
            )
    if REJECTS.name in expected_rows:
        name = names.get(REJECTS.name, REJECTS.name)
        checks.append(_count_check(query, REJECTS.name, name, expected_rows[REJECTS.name]))
    return checks, catalogue


def _count_check(query: Query, table: str, name: str, expected: int) -> dict[str, Any]:
    rows = int(query(f"SELECT count(*) FROM {name}")[0][0])
    return {
        "name": f"{table}: row count",
        "ok": rows == expected,
        "detail": f"{rows:,} rows, expected {expected:,}",
    }
