"""Load 3NF Parquet into a server database (MySQL/MariaDB, PostgreSQL): stage, key, verify, swap.

Every load builds `<table>__staging_<run>` tables beside the live ones: Parquet rows through the
server's bulk path in key order, rows of splits not being loaded copied from the live tables,
then keys and the verification queries. Only then are all staging tables swapped in, in one
step. A failure at any point discards the staging tables; the live tables are not touched
before the swap. Dialects plug in by subclassing `ServerTarget`.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from deepcvr.aliccp import SPLITS
from deepcvr.errors import DataError, DeepCVRError, TargetError
from deepcvr.load.parquet_input import ParquetInput
from deepcvr.load.verify import KEYS_COLUMNS, KEYS_TABLE, run_checks
from deepcvr.progress import progress
from deepcvr.schema import (
    FEATURE,
    MODEL,
    REJECTS,
    ForeignKey,
    Table,
    create_table_sql,
    foreign_key_clause,
    primary_key_clause,
)

log = logging.getLogger("deepcvr")

STAGING = "__staging_"
OLD = "__old_"
ALL_TABLES = (*MODEL, REJECTS)
OWNED = (*(t.name for t in ALL_TABLES), KEYS_TABLE)  # prefixes of staging tables we may drop

Advance = Callable[[int], None]

# --- the dialect interface ---------------------------------------------------------------------


class ServerTarget(ABC):
    """One connection to a server database: its SQL, bulk path, key DDL and swap."""

    dialect: str
    bulk_path: str
    schema_sql: str  # SQL naming the schema (PostgreSQL) or database (MySQL) loaded into
    pk_inline = False  # create the primary key before the bulk load instead of after it
    table_options = ""
    driver_errors: tuple[type[Exception], ...] = ()

    def __init__(self, con: Any, shown: str) -> None:
        self.con = con  # a DB-API connection whose parameter style is %s (PyMySQL, psycopg)
        self.shown = shown  # the target URL with its password masked: the only form we print

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return its row count."""
        with self.con.cursor() as cur:
            cur.execute(sql, tuple(params) or None)  # None: a literal % needs no escaping
            return int(cur.rowcount)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.con.cursor() as cur:
            cur.execute(sql, tuple(params) or None)
            return list(cur.fetchall())

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.con.cursor() as cur:
            cur.executemany(sql, rows)

    @abstractmethod
    def prepare(self) -> None:
        """Session settings and the one-load-at-a-time lock."""

    @abstractmethod
    def bulk_load(self, name: str, table: Table, files: Sequence[Path], advance: Advance) -> int:
        """Load the Parquet `files` into table `name`; return the rows the server stored."""

    @abstractmethod
    def constraint_name(self, table: Table, fk: ForeignKey, run: str) -> str: ...

    @abstractmethod
    def row_estimate(self, name: str) -> int:
        """The server's cheap row estimate of live table `name` (0 when unknown)."""

    @abstractmethod
    def swap(self, pairs: list[tuple[str, str]], live: set[str], run: str) -> None:
        """Put every (staging, final) in place of `final` in one step, dropping the old ones."""

    @abstractmethod
    def discard(self, names: Sequence[str]) -> None:
        """Remove staging tables after a failure (or from a crashed earlier load)."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def describe(self, err: Exception) -> DeepCVRError:
        """A driver error as one line that says what to do."""

    def abort(self, names: Sequence[str]) -> None:
        """Undo a failed load: drop the staging tables it created."""
        self.discard(names)

    def analyze(self, names: Sequence[str]) -> None:  # noqa: B027 - optional hook
        """Refresh planner statistics after the bulk load (a no-op where the server does it)."""

    def create_sql(self, table: Table, name: str, with_pk: bool) -> str:
        return create_table_sql(table, self.dialect, name=name, with_keys=with_pk) + (
            self.table_options
        )

    def add_keys(
        self, name: str, table: Table, pk: bool, fks: list[tuple[ForeignKey, str, str]]
    ) -> None:
        """One ALTER TABLE per table, so the server rebuilds or scans it once."""
        clauses = [f"ADD {primary_key_clause(table)}"] if pk else []
        clauses += [
            f"ADD CONSTRAINT {constraint} {foreign_key_clause(fk, ref)}"
            for fk, ref, constraint in fks
        ]
        if clauses:
            self.execute(f"ALTER TABLE {name} {', '.join(clauses)}")

    def live_tables(self) -> dict[str, list[str]]:
        rows = self.query(
            "SELECT table_name, column_name FROM information_schema.columns "
            f"WHERE table_schema = {self.schema_sql} ORDER BY table_name, ordinal_position"
        )
        tables: dict[str, list[str]] = {}
        for name, column in rows:
            tables.setdefault(name, []).append(column)
        return tables

    def stale_tables(self) -> list[str]:
        """Staging and old tables a killed earlier load left behind (the lock is held)."""
        rows = self.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = "
            f"{self.schema_sql} AND (table_name LIKE %s OR table_name LIKE %s)",
            (f"%{STAGING}%".replace("_", "\\_"), f"%{OLD}%".replace("_", "\\_")),
        )
        names = [r[0] for r in rows]
        return [n for n in names if n.split("__", 1)[0] in OWNED]


# --- the load ----------------------------------------------------------------------------------


def load_server(
    target: ServerTarget, inp: ParquetInput, replace: bool, enforce_max_rows: int
) -> dict[str, Any]:
    """Stage, key, verify and swap; on any failure nothing of the live tables has changed."""
    start = time.monotonic()
    job = _Load(target, inp, uuid.uuid4().hex[:8])
    try:
        try:
            summary = job.run(replace, enforce_max_rows)
        except target.driver_errors as err:
            raise target.describe(err) from None
        finally:
            if not job.swapped:
                job.abandon()
    finally:
        target.close()
    summary["seconds"] = round(time.monotonic() - start, 3)
    return summary


class _Load:
    def __init__(self, target: ServerTarget, inp: ParquetInput, run: str) -> None:
        self.t, self.inp, self.run_id = target, inp, run
        self.names = {name: f"{name}{STAGING}{run}" for name in OWNED}
        self.raw_feature = f"{FEATURE.name}{STAGING}{run}_raw"
        self.created: list[str] = []
        self.swapped = False

    def run(self, replace: bool, enforce_max_rows: int) -> dict[str, Any]:
        t = self.t
        t.prepare()
        stale = t.stale_tables()
        if stale:
            log.info("dropping %d staging tables of an interrupted load", len(stale))
            t.discard(stale)
        live = t.live_tables()
        shapes = {t_.name: t_.column_names for t_ in ALL_TABLES} | {KEYS_TABLE: list(KEYS_COLUMNS)}
        for name, columns in shapes.items():
            if name in live and live[name] != columns and not replace:
                raise TargetError(
                    f"{t.shown}: table {name} exists with another shape "
                    f"({', '.join(live[name])}); pass --replace to replace it"
                )
        keep = {name for name, columns in shapes.items() if live.get(name) == columns}
        if set(SPLITS) <= set(self.inp.splits):  # every split is new: no live feature is kept
            keep.discard(FEATURE.name)
        tables: dict[str, dict[str, Any]] = {}
        enforce: dict[str, bool] = {}
        for table in ALL_TABLES:
            estimate = self.inp.tables[table.name].rows
            if table.name in keep:  # an upper bound: the live rows of every split
                estimate += t.row_estimate(table.name)
            enforce[table.name] = table is not REJECTS and estimate <= enforce_max_rows
            tables[table.name] = self._load_table(table, table.name in keep, enforce[table.name])
        enforced = self._add_keys(enforce, tables)
        t.analyze([self.names[x.name] for x in ALL_TABLES])
        checks = self._verify(tables, enforced)
        pairs = [(self.names[name], name) for name in OWNED]
        t.swap(pairs, set(live) & set(OWNED), self.run_id)
        self.swapped = True
        return {
            "target": t.shown,
            "bulk_path": t.bulk_path,
            "splits": list(self.inp.splits),
            "tables": tables,
            "checks": checks,
        }

    def abandon(self) -> None:
        try:
            self.t.abort(list(reversed(self.created)))
        except Exception as err:  # the original error matters more; the next load cleans up
            log.warning("%s: could not drop staging tables (%s)", self.t.shown, err)

    def _create(self, table: Table, name: str, with_pk: bool) -> None:
        self.created.append(name)  # before: a half-made table is still ours to drop
        self.t.execute(self.t.create_sql(table, name, with_pk))

    def _segments(self, table: Table, keep_old: bool) -> list[tuple[str, Any]]:
        """Sources in key order: Parquet files of loaded splits, live rows of the others."""
        files = self.inp.tables[table.name].files
        if not table.per_split:
            return [("parquet", files)]
        out: list[tuple[str, Any]] = []
        for split in sorted(SPLITS):  # every split-first key sorts 'test' before 'train'
            if split in self.inp.splits:
                part = tuple(f for f in files if f.parent.parent.name == split)
                if out and out[-1][0] == "parquet":  # one bulk statement for adjacent splits
                    out[-1] = ("parquet", out[-1][1] + part)
                else:
                    out.append(("parquet", part))
            elif keep_old:
                out.append(("live", split))
        return out

    def _load_table(self, table: Table, keep_old: bool, enforce: bool) -> dict[str, Any]:
        t, name = self.t, self.names[table.name]
        cols = ", ".join(table.column_names)
        t0 = time.monotonic()
        parquet_rows = self.inp.tables[table.name].rows
        rows = copied = 0
        # A split's features are unique already; several sources need a union, on the server.
        union = table is FEATURE and (len(self.inp.splits) > 1 or keep_old)
        if union:
            self._create(table, self.raw_feature, False)
            segments: list[tuple[str, Any]] = [("parquet", self.inp.tables[table.name].files)]
            if keep_old:
                segments.append(("live", None))
            into = self.raw_feature
        else:
            segments, into = self._segments(table, keep_old), name
        self._create(table, name, enforce and t.pk_inline)
        with progress(f"load {table.name}", parquet_rows, unit="rows") as advance:
            for kind, source in segments:
                if kind == "parquet" and source:
                    stored = t.bulk_load(into, table, source, advance)
                    rows += stored
                elif kind == "live":
                    where = "" if source is None else " WHERE split = %s"
                    n = t.execute(
                        f"INSERT INTO {into} ({cols}) SELECT {cols} FROM {table.name}{where}",
                        () if source is None else (source,),
                    )
                    rows, copied = rows + n, copied + n
        if union:
            rows = self._dedupe_features(name)
        seconds = time.monotonic() - t0
        return {
            "rows": rows,
            "parquet_rows": parquet_rows,
            "copied_rows": copied,
            "keys": "enforced" if enforce else "verified by queries",
            "seconds": round(seconds, 3),
            "rows_per_s": round((parquet_rows if union else rows) / seconds) if seconds else None,
        }

    def _dedupe_features(self, name: str) -> int:
        raw = self.raw_feature
        rows = self.t.execute(
            f"INSERT INTO {name} (feature_id, field_id) SELECT feature_id, min(field_id) "
            f"FROM {raw} GROUP BY feature_id ORDER BY feature_id"
        )
        # A feature id under two fields kept only one of them above: find the others. NOT
        # EXISTS, not a join: MariaDB then probes the new primary key instead of guessing a
        # join order from the empty statistics of tables it has just filled.
        clash = self.t.query(
            f"SELECT r.feature_id, r.field_id FROM {raw} r WHERE NOT EXISTS (SELECT 1 FROM "
            f"{name} s WHERE s.feature_id = r.feature_id AND s.field_id = r.field_id) "
            "ORDER BY r.feature_id LIMIT 3"
        )
        if clash:
            examples = ", ".join(f"{fid} also in field {field}" for fid, field in clash)
            raise DataError(
                f"feature: feature ids belong to two fields across splits ({examples}); "
                "transform the splits together so one field wins"
            )
        self.t.discard([raw])
        self.created.remove(raw)
        return rows

    def _add_keys(self, enforce: dict[str, bool], tables: dict[str, dict[str, Any]]) -> set[str]:
        enforced: set[str] = set()
        for table in MODEL:  # referenced tables first: a foreign key needs its parent's key
            if not enforce[table.name]:
                continue
            t0 = time.monotonic()
            fks = [
                (fk, self.names[fk.ref_table], self.t.constraint_name(table, fk, self.run_id))
                for fk in table.foreign_keys
                if fk.ref_table in enforced
            ]
            self.t.add_keys(self.names[table.name], table, not self.t.pk_inline, fks)
            tables[table.name]["keys_seconds"] = round(time.monotonic() - t0, 3)
            enforced.add(table.name)
        return enforced

    def _verify(
        self, tables: dict[str, dict[str, Any]], enforced: set[str]
    ) -> list[dict[str, Any]]:
        expected = {name: info["rows"] for name, info in tables.items()}
        for name, info in tables.items():
            if name != FEATURE.name:  # loaded rows must be exactly Parquet + kept live rows
                expected[name] = info["parquet_rows"] + info["copied_rows"]
        checks, catalogue = run_checks(
            self.t.query, expected, enforced, names=self.names, trust_enforced_keys=True
        )
        failed = [c for c in checks if not c["ok"]]
        if failed:
            raise DataError(
                f"{self.t.shown}: verification failed: "
                + "; ".join(f"{c['name']}: {c['detail']}" for c in failed[:5])
                + "; nothing was changed"
            )
        keys = self.names[KEYS_TABLE]
        self.created.append(keys)
        self.t.execute(self._keys_table_sql(keys))
        marks = ", ".join(["%s"] * len(KEYS_COLUMNS))
        self.t.executemany(
            f"INSERT INTO {keys} ({', '.join(KEYS_COLUMNS)}) VALUES ({marks})", catalogue
        )
        return checks

    def _keys_table_sql(self, name: str) -> str:
        text = "VARCHAR(255)"
        types = (text, "VARCHAR(16)", text, text, text, "BOOLEAN", "BIGINT")
        cols = ", ".join(f"{c} {ty}" for c, ty in zip(KEYS_COLUMNS, types, strict=True))
        return f"CREATE TABLE {name} ({cols}){self.t.table_options}"


_STAGING_NAME = re.compile(rf"{STAGING}[0-9a-f]{{8}}(_raw)?")


def one_line(text: str) -> str:
    """A server message as one line, naming tables as the user knows them (no staging suffix)."""
    return _STAGING_NAME.sub("", " ".join(text.split()))
