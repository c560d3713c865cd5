"""Load 3NF Parquet into a DuckDB file: bulk reads, keys, verification, atomic file swap.

The new database is built in a temp file beside the target (rows of splits not being loaded are
copied from the previous version), verified, then renamed over the target in one step: a failure
at any point leaves the previous database untouched and queryable.
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import duckdb

from deepcvr.errors import DataError, TargetError
from deepcvr.fsutil import temp_sibling
from deepcvr.load.duckdb_keys import INTEGER_TYPES, count_rows, proves_references, proves_unique
from deepcvr.load.parquet_input import ParquetInput, TableInput
from deepcvr.load.verify import KEYS_TABLE, run_checks
from deepcvr.progress import progress
from deepcvr.schema import FEATURE, MODEL, REJECTS, Table, create_table_sql

DIALECT = "duckdb"


def _table_sql(table: Table, enforce: bool, enforced: set[str]) -> str:
    """CREATE TABLE with the FOREIGN KEYs to enforce inline: DuckDB cannot add them later. The
    PRIMARY KEY comes after the bulk insert, which builds its index faster than row by row."""
    fks = tuple(fk for fk in table.foreign_keys if fk.ref_table in enforced) if enforce else ()
    return create_table_sql(table, DIALECT, foreign_keys=fks)


def _check_target_path(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TargetError(f"{path}: cannot create the directory ({err.strerror})") from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise TargetError(f"{path}: target database path is not writable; choose another target")
    if path.is_dir():
        raise TargetError(f"{path}: target is a directory; give a database file path")


def _old_tables(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    rows = con.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_catalog = 'old' ORDER BY table_name, ordinal_position"
    ).fetchall()
    tables: dict[str, list[str]] = {}
    for name, column in rows:
        tables.setdefault(name, []).append(column)
    return tables


def load_duckdb(
    inp: ParquetInput, path: Path, replace: bool, enforce_max_rows: int, memory_mb: int
) -> dict[str, Any]:
    """Load into a new file beside `path` and swap it in; DuckDB holds at most `memory_mb` MB
    of data (its buffer pool) and spills what does not fit to a temp directory beside it."""
    _check_target_path(path)
    tmp = temp_sibling(path)
    spill = Path(f"{tmp}.spill")  # hidden like the temp database, and removed with it
    start = time.monotonic()
    con = duckdb.connect(
        str(tmp), config={"memory_limit": f"{memory_mb}MB", "temp_directory": str(spill)}
    )
    # Rows need no particular physical order (every key is checked; a query that cares sorts).
    # Letting each thread append as it goes makes the bulk inserts faster and lighter on memory
    # (long tables plus checkpoint at 1 M impressions: 1.5 s instead of 2.5 s); each thread
    # appends runs of consecutive rows, so storage stays largely clustered by key.
    con.execute("SET preserve_insertion_order = false")
    try:
        summary = _build(con, inp, path, replace, enforce_max_rows)
        con.execute("CHECKPOINT")
        con.close()
        os.replace(tmp, path)
    except duckdb.Error as err:
        hint = ""
        if isinstance(err, duckdb.OutOfMemoryException):
            hint = f"; raise memory_mb (now {memory_mb}) or free memory"
        first = str(err).splitlines()[0]
        raise TargetError(
            f"{path}: load failed, previous database left as it was ({first}){hint}"
        ) from None
    finally:
        con.close()  # a no-op if closed; else (Ctrl-C, a failed check) before the files go
        for leftover in (tmp, Path(f"{tmp}.wal")):
            leftover.unlink(missing_ok=True)
        shutil.rmtree(spill, ignore_errors=True)
    summary["seconds"] = round(time.monotonic() - start, 3)
    summary["memory_mb"] = memory_mb
    return summary


def _attach_old(con: duckdb.DuckDBPyConnection, path: Path) -> dict[str, list[str]]:
    if not path.exists():
        return {}
    try:
        con.execute(f"ATTACH '{path}' AS old (READ_ONLY)")
    except duckdb.Error as err:
        message = str(err).splitlines()[0]
        if "lock" in message.lower():
            raise TargetError(
                f"{path}: the database is open in another process; close it and retry"
            ) from None
        raise TargetError(
            f"{path}: existing file is not a DuckDB database ({message}); remove it or choose "
            "another target"
        ) from None
    return _old_tables(con)


def _build(
    con: duckdb.DuckDBPyConnection,
    inp: ParquetInput,
    path: Path,
    replace: bool,
    enforce_max_rows: int,
) -> dict[str, Any]:
    old = _attach_old(con, path)
    for table in (*MODEL, REJECTS):
        if table.name in old and old[table.name] != table.column_names and not replace:
            raise TargetError(
                f"{path}: table {table.name} exists with another shape "
                f"({', '.join(old[table.name])}); pass --replace to replace it"
            )
    keep_old = {t.name for t in (*MODEL, REJECTS) if old.get(t.name) == t.column_names}
    splits = ", ".join(f"'{s}'" for s in inp.splits)
    enforced: set[str] = set()
    tables: dict[str, Any] = {}
    total_rows = sum(inp.tables[t.name].rows for t in MODEL)
    with progress(f"load {path.name}", total_rows, unit="rows") as advance:
        for table in (*MODEL, REJECTS):
            t0 = time.monotonic()
            source = f"({_parquet_select(inp.tables[table.name])})"
            if not inp.tables[table.name].files:
                source = f"(SELECT * FROM {table.name}__empty)"
                con.execute(create_table_sql(table, DIALECT, name=f"{table.name}__empty"))
            if table.name == "feature":
                select = _feature_union(source, "feature" in keep_old)
                # Distinct features are at most the splits' rows together (plus the kept ones).
                bound = inp.tables[table.name].rows
                if "feature" in keep_old:
                    bound += count_rows(con, "SELECT 1 FROM old.feature")
                rows, enforce = _load_features(con, select, bound, enforce_max_rows, enforced, path)
            else:
                cols = ", ".join(table.column_names)
                select = f"SELECT {cols} FROM {source}"
                # What the table must hold: the Parquet footers' counts plus the rows kept
                # from the previous version; verified after loading.
                rows = inp.tables[table.name].rows
                if table.name in keep_old and table.per_split:
                    kept = f"FROM old.{table.name} WHERE split NOT IN ({splits})"
                    select += f" UNION ALL SELECT {cols} {kept}"
                    rows += count_rows(con, f"SELECT 1 {kept}")
                enforce = table is not REJECTS and rows <= enforce_max_rows
                _load_table(con, table, select, enforce, enforced, path)
            if enforce:
                enforced.add(table.name)
            if table is not REJECTS:
                advance(inp.tables[table.name].rows)
            tables[table.name] = _table_summary(rows, inp, table, enforce, t0)
            con.execute(f"DROP TABLE IF EXISTS {table.name}__empty")
    expected = {name: info["rows"] for name, info in tables.items()}
    # DuckDB checks its constraints on every insert, so enforced keys need no second proof.
    checks, catalogue = run_checks(
        lambda sql: con.execute(sql).fetchall(),
        expected,
        enforced,
        trust_enforced_keys=True,
        trust_enforced_foreign_keys=True,
        proves_unique=lambda table, name: proves_unique(con, table, name),
        proves_references=lambda table, fk, name, parent: proves_references(
            con, table, fk, name, parent
        ),
    )
    failed = [c for c in checks if not c["ok"]]
    if failed:
        raise DataError(
            f"{path}: verification failed: "
            + "; ".join(f"{c['name']}: {c['detail']}" for c in failed[:5])
            + "; nothing was changed"
        )
    con.execute(
        f"CREATE TABLE {KEYS_TABLE} (table_name VARCHAR, kind VARCHAR, columns VARCHAR, "
        "ref_table VARCHAR, ref_columns VARCHAR, enforced BOOLEAN, violations BIGINT)"
    )
    con.executemany(f"INSERT INTO {KEYS_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)", catalogue)
    return {
        "target": f"duckdb:///{path}",
        "splits": list(inp.splits),
        "tables": tables,
        "checks": checks,
    }


# DuckDB checks inline foreign keys row by row on one thread per INSERT (2.1 s of the 3.4 s
# insert of 4.6 M `feature` rows); concurrent INSERTs of disjoint parts share that work.
_PARALLEL_INSERTS = max(1, min(4, os.cpu_count() or 1))


def _insert(con: duckdb.DuckDBPyConnection, table: Table, select: str, parts: int) -> None:
    """INSERT the rows of `select`; with `parts` > 1, as that many concurrent INSERTs, each on
    its own cursor, of the rows whose leading integer key column is k modulo `parts` (abs:
    a negative id has a negative remainder)."""
    types = {c.name: c.type for c in table.columns}
    column = next((c for c in table.primary_key if types[c] in INTEGER_TYPES), None)
    if parts <= 1 or column is None:
        con.execute(f"INSERT INTO {table.name} {select}")
        return
    cursors = [con.cursor() for _ in range(parts)]
    statements = [
        f"INSERT INTO {table.name} SELECT * FROM ({select}) WHERE abs({column} % {parts}) = {k}"
        for k in range(parts)
    ]
    with ThreadPoolExecutor(parts) as pool:
        futures = [pool.submit(c.execute, sql) for c, sql in zip(cursors, statements, strict=True)]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:  # Ctrl-C: stop the others before the connection goes
            for c in cursors:
                c.interrupt()
            raise
        if any(f.done() and f.exception() for f in futures):
            for c in cursors:  # one part failed: the rest is moot
                c.interrupt()
        wait(futures)
    for c in cursors:
        c.close()
    errors = [f.exception() for f in futures if f.exception() is not None]
    # The part that failed, not the ones interrupted because of it.
    errors.sort(key=lambda e: isinstance(e, duckdb.InterruptException))
    if errors:
        raise errors[0]


def _table_summary(
    rows: int, inp: ParquetInput, table: Table, enforce: bool, started: float
) -> dict[str, Any]:
    seconds = time.monotonic() - started
    return {
        "rows": rows,
        "parquet_rows": inp.tables[table.name].rows,
        "keys": "enforced" if enforce else "verified by queries",
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds) if seconds else None,
    }


def _add_primary_key(con: duckdb.DuckDBPyConnection, table: Table) -> None:
    con.execute(f"ALTER TABLE {table.name} ADD PRIMARY KEY ({', '.join(table.primary_key)})")


def _key_error(
    con: duckdb.DuckDBPyConnection, table: Table, err: duckdb.Error, path: Path
) -> DataError:
    return DataError(
        f"{table.name}: {_duplicate_example(con, table) or str(err).splitlines()[0]}"
        f"; nothing was changed in {path}"
    )


def _load_table(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    select: str,
    enforce: bool,
    enforced: set[str],
    path: Path,
    conflicts: bool = False,
) -> None:
    """Create and fill `table`; with `conflicts`, a key violation is first checked for a
    feature id under two fields (the clearer message)."""
    con.execute(_table_sql(table, enforce, enforced))
    try:
        parallel = enforce and any(fk.ref_table in enforced for fk in table.foreign_keys)
        _insert(con, table, select, _PARALLEL_INSERTS if parallel else 1)
        if enforce and table.keyable:
            _add_primary_key(con, table)
    except duckdb.ConstraintException as err:
        if conflicts:
            _check_feature_conflicts(con)
        raise _key_error(con, table, err, path) from None


def _load_features(
    con: duckdb.DuckDBPyConnection,
    select: str,
    bound: int,
    enforce_max_rows: int,
    enforced: set[str],
    path: Path,
) -> tuple[int, bool]:
    """Load the distinct features of every split; returns (rows, keys enforced).

    The splits share features, so when the bound on their count cannot settle enforcement the
    DISTINCT runs once, into a table that becomes `feature` as it is (keys proved by queries),
    or is copied into a `feature` with inline foreign keys if it turns out small enough."""
    if bound <= enforce_max_rows:
        # Concurrent INSERTs each run the DISTINCT for their part of the ids: on two cores
        # that overlaps the row-by-row foreign key checks (3.7-4.1 s at 1 M impressions
        # against 4.8 s for a DISTINCT first and the checked copy after).
        _load_table(con, FEATURE, select, True, enforced, path, conflicts=True)
        return count_rows(con, f"SELECT 1 FROM {FEATURE.name}"), True
    staged = f"{FEATURE.name}__distinct"
    con.execute(create_table_sql(FEATURE, DIALECT, name=staged))
    con.execute(f"INSERT INTO {staged} {select}")
    rows = count_rows(con, f"SELECT 1 FROM {staged}")
    if rows <= enforce_max_rows:
        _load_table(con, FEATURE, f"SELECT * FROM {staged}", True, enforced, path, conflicts=True)
        con.execute(f"DROP TABLE {staged}")
        return rows, True
    con.execute(f"ALTER TABLE {staged} RENAME TO {FEATURE.name}")
    # The key is proved after the load anyway; a feature id twice means two fields for one
    # feature, which gets its own message.
    if not proves_unique(con, FEATURE, FEATURE.name):
        _check_feature_conflicts(con)
    return rows, False


def _duplicate_example(con: duckdb.DuckDBPyConnection, table: Table) -> str | None:
    """One duplicated primary key of a loaded table, for the error message (None if unique)."""
    key = ", ".join(table.primary_key)
    row = con.execute(
        f"SELECT {key}, count(*) FROM {table.name} GROUP BY {key} HAVING count(*) > 1 LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    values = ", ".join(repr(v) for v in row[:-1])
    return f"primary key ({key}) = ({values}) is in {row[-1]} rows of the Parquet input"


def _parquet_select(parts: TableInput) -> str:
    """SELECT the rows of a table's Parquet parts. Where the footers prove a part's `split`
    constant, the constant is selected instead of the column: DuckDB then neither decodes it
    nor converts it to its ENUM row by row (0.15-0.2 s of each long table at 1 M impressions)."""
    names = parts.table.column_names
    by_split: dict[str | None, list[str]] = {}
    for path in parts.files:
        by_split.setdefault(parts.split_of.get(path), []).append(str(path))
    selects = []
    for value, files in by_split.items():
        constant = None if value is None else "'" + value.replace("'", "''") + "' AS split"
        columns = ", ".join(constant if name == "split" and constant else name for name in names)
        selects.append(f"SELECT {columns} FROM read_parquet({files!r}, union_by_name=false)")
    return " UNION ALL ".join(selects)


def _feature_union(source: str, with_old: bool) -> str:
    union = f"SELECT feature_id, field_id FROM {source}"
    if with_old:
        union += " UNION ALL SELECT feature_id, field_id FROM old.feature"
    return f"SELECT DISTINCT feature_id, field_id FROM ({union})"


def _check_feature_conflicts(con: duckdb.DuckDBPyConnection) -> None:
    """The loaded feature table holds distinct (feature_id, field_id) pairs: a feature id twice
    means two splits gave it different fields."""
    clash = con.execute(
        "SELECT feature_id, list(field_id ORDER BY field_id) FROM feature "
        "GROUP BY feature_id HAVING count(*) > 1 ORDER BY feature_id LIMIT 3"
    ).fetchall()
    if clash:
        examples = ", ".join(f"{fid} in fields {'/'.join(fields)}" for fid, fields in clash)
        raise DataError(
            f"feature: feature ids belong to two fields across splits ({examples}); "
            "transform the splits together so one field wins"
        )
