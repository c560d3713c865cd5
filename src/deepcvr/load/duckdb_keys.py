"""DuckDB key proofs: a primary key shown unique by queries, cheaper than a GROUP BY on it."""

from __future__ import annotations

import itertools
from typing import Any

import duckdb

from deepcvr.schema import ForeignKey, Table

INTEGER_TYPES = {"int8", "int16", "int32", "int64"}  # key columns the bitmask proof and split use


def count_rows(con: duckdb.DuckDBPyConnection, select: str) -> int:
    return int(con.execute(f"SELECT count(*) FROM ({select})").fetchone()[0])  # type: ignore[index]


BITSTRING_MAX_BITS = 1 << 27  # 16 MB per bitstring (Ali-CCP's ids span ~10 M, sample ids ~43 M)
SCREEN_ROWS = 50_000_000  # rows per uniqueness query: bounds its memory at full scale


def duplicates_sql(table: Table, name: str) -> str:
    """A query whose result is 0 only if the key is unique, cheaper than a GROUP BY on the key.

    A key ending in an integer (`position` in the long tables) is proved exactly: group the rows
    by the other key columns and the integer's block of 64 (`>> 6`); each row sets bit
    `& 63` of a 64-bit mask, and a group has a repeated key exactly when it has more rows than
    set bits. In the long tables the groups are lines, not structures (13 M structures in 1 M
    groups at 1 M impressions): 4-6x faster than hashing every key. Other keys are screened by
    rows - distinct key hashes, where a non-zero result may be a hash collision."""
    *group, last = table.primary_key
    types = {c.name: c.type for c in table.columns}
    if types[last] in INTEGER_TYPES:
        bit = f"1::UBIGINT << (({last} & 63)::UBIGINT)"
        groups = ", ".join([*group, f"{last} >> 6"])
        return (
            f"SELECT count(*) FILTER (WHERE n <> bit_count(bits)) FROM (SELECT count(*) AS n, "
            f"bit_or({bit}) AS bits FROM {name} {{where}} GROUP BY {groups})"
        )
    key = ", ".join(table.primary_key)
    return f"SELECT count(*) - count(DISTINCT hash({key})) FROM {name} {{where}}"


def proves_unique(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    name: str,
    max_rows: int = SCREEN_ROWS,
    max_bits: int | None = None,
) -> bool:
    """True if the key is shown unique (`unique_by_bits` where it applies, else
    `duplicates_sql`); False means "duplicates, or cannot tell": the exact GROUP BY query then
    counts them."""
    by_bits = unique_by_bits(con, table, name, max_bits or BITSTRING_MAX_BITS)
    if by_bits is not None:
        return by_bits
    return _unique_by_groups(con, table, name, max_rows)


MAX_BIT_RANGES = 64  # beyond this many range queries, the grouped proof is cheaper


def unique_by_bits(
    con: duckdb.DuckDBPyConnection, table: Table, name: str, max_bits: int
) -> bool | None:
    """Whether a key ending in two integer columns (`sample_id, position`) is unique, by
    bitstrings; None if the key is not of that shape or its ranges are too sparse.

    Each row sets bit (lead - lo) x width + (last - min) of its group's (`split`'s) bitstring:
    the key is unique exactly when every group has as many set bits as rows. No hashing: 0.6 s
    instead of 1.1 s for the grouped proof over 52 M `sample_feature` rows in a load. The lead
    column's range is cut so that no bitstring exceeds `max_bits`."""
    if len(table.primary_key) < 2:
        return None
    *group, lead, last = table.primary_key
    types = {c.name: c.type for c in table.columns}
    if not (types[lead] in INTEGER_TYPES and types[last] in INTEGER_TYPES):
        return None
    lead_lo, lead_hi, lo, hi = con.execute(
        f"SELECT min({lead}), max({lead}), min({last}), max({last}) FROM {name}"
    ).fetchone()  # type: ignore[misc]
    if lead_lo is None:
        return True  # no rows
    width = hi - lo + 1
    per_range = max_bits // width
    if not per_range or -(-(lead_hi - lead_lo + 1) // per_range) > MAX_BIT_RANGES:
        return None
    by = f" GROUP BY {', '.join(group)}" if group else ""
    for start in range(lead_lo, lead_hi + 1, per_range):
        end = min(start + per_range, lead_hi + 1)
        bit = f"({lead} - {start}) * {width} + ({last} - {lo})"
        missing = con.execute(
            f"SELECT coalesce(sum(n - b), 0) FROM (SELECT count(*) AS n, "
            f"bit_count(bitstring_agg({bit}, 0, {(end - start) * width - 1})) AS b "
            f"FROM {name} WHERE {lead} >= {start} AND {lead} < {end}{by})"
        ).fetchone()[0]  # type: ignore[index]
        if missing:
            return False
    return True


def _unique_by_groups(
    con: duckdb.DuckDBPyConnection, table: Table, name: str, max_rows: int
) -> bool:
    """True if `duplicates_sql` finds no repeated key.

    A table above `max_rows` is checked in ranges of the key's leading column (boundaries from a
    sample), so no single query holds a billion groups; Ali-CCP's files are sorted by that
    column, so each range reads only its own row groups."""
    rows = count_rows(con, f"SELECT 1 FROM {name}")
    parts = -(-rows // max_rows)
    lead = next((c for c in table.primary_key if c != "split"), table.primary_key[0])
    bounds: list[Any] = []
    if parts > 1:
        picks = con.execute(
            f"SELECT {lead} FROM {name} USING SAMPLE {min(rows, parts * 100)} ROWS ORDER BY {lead}"
        ).fetchall()
        bounds = sorted({picks[i * len(picks) // parts][0] for i in range(1, parts)})
    sql = duplicates_sql(table, name)
    edges: list[Any] = [None, *bounds, None]
    for lo, hi in itertools.pairwise(edges):
        conds, params = [], []
        if lo is not None:
            conds.append(f"{lead} >= ?")
            params.append(lo)
        if hi is not None:
            conds.append(f"{lead} < ?")
            params.append(hi)
        where = f"WHERE {' AND '.join(conds)}" if conds else ""
        if con.execute(sql.format(where=where), params).fetchone()[0]:  # type: ignore[index]
            return False
    return True


def proves_references(
    con: duckdb.DuckDBPyConnection, child: Table, fk: ForeignKey, name: str, parent: str
) -> bool:
    """True if every row of `name` has a parent in `parent` through `fk`; False means
    "orphans, or cannot tell": the exact anti-join then counts them.

    A foreign key ending in an integer column is proved with bitstrings instead of a hash join
    (0.2 s instead of 0.8 s for both `feature_id` keys at 1 M impressions): one bit per id in
    the key's range, OR-ed per value of the other key columns, for child and parent; the key
    holds exactly when no child bit is missing from its parent's bitstring."""
    *group, last = fk.columns
    *ref_group, ref_last = fk.ref_columns
    if {c.name: c.type for c in child.columns}[last] not in INTEGER_TYPES:
        return False
    lo, hi, child_lo, child_hi = con.execute(
        f"SELECT min({ref_last}), max({ref_last}), (SELECT min({last}) FROM {name}), "
        f"(SELECT max({last}) FROM {name}) FROM {parent}"
    ).fetchone()  # type: ignore[misc]
    if child_lo is None:
        return True  # no child rows
    if lo is None or child_lo < lo or child_hi > hi or hi - lo >= BITSTRING_MAX_BITS:
        return False
    bits = f"bitstring_agg({{}}, {lo}, {hi})"
    # A key of one column is one group: a constant stands in for the other key columns.
    child_keys = ", ".join(f"{c} AS g{i}" for i, c in enumerate(group)) or "0 AS g0"
    keys = ", ".join(f"{r} AS g{i}" for i, r in enumerate(ref_group)) or "0 AS g0"
    on = " AND ".join(f"c.g{i} = p.g{i}" for i in range(max(1, len(group))))
    missing = con.execute(
        f"SELECT count(*) FILTER (WHERE p.b IS NULL) "
        f"+ coalesce(sum(bit_count(c.b & ~p.b)), 0) FROM "
        f"(SELECT {child_keys}, {bits.format(last)} AS b FROM {name} GROUP BY ALL) c "
        f"LEFT JOIN (SELECT {keys}, {bits.format(ref_last)} AS b FROM {parent} GROUP BY ALL) p "
        f"ON {on}"
    ).fetchone()[0]  # type: ignore[index]
    return missing == 0
