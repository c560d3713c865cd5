"""`load.database`: pick the target from its URL and load the Parquet tables into it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from deepcvr.errors import ConfigError, TargetError
from deepcvr.load.ops import DUCKDB_MEMORY_MB
from deepcvr.load.parquet_input import inspect_parquet
from deepcvr.load.verify import Query
from deepcvr.secrets import mask_url

if TYPE_CHECKING:
    from deepcvr.load.ops import LoadParams
    from deepcvr.load.sql_target import ServerTarget
    from deepcvr.pipeline.ops import OpContext

SUPPORTED = (
    "duckdb:///PATH, mysql+pymysql://USER[:PASSWORD]@HOST[:PORT]/DB or "
    "postgresql+psycopg://USER[:PASSWORD]@HOST[:PORT]/DB"
)
# URL scheme -> (target kind, the drivers we speak); a bare scheme means our driver.
_SCHEMES = {
    "duckdb": ("duckdb", ("",)),
    "mysql": ("mysql", ("", "pymysql")),
    "mariadb": ("mysql", ("", "pymysql")),
    "postgresql": ("postgresql", ("", "psycopg")),
}
_DRIVER = {"duckdb": "duckdb", "mysql": "mysql+pymysql", "postgresql": "postgresql+psycopg"}
# Tables up to this many rows get enforced keys unless the user says otherwise. DuckDB checks an
# inline foreign key row by row as rows are inserted (~0.6 us a row and core, against ~0.05 us
# for the anti-join that proves it after the load) and cannot add one later, so it enforces
# less; the servers add their keys after the load, and MySQL's anti-join checks need the
# parent tables indexed.
ENFORCE_KEYS_MAX_ROWS = {"duckdb": 1_000_000, "mysql": 10_000_000, "postgresql": 10_000_000}


def parse_target(target: str) -> tuple[str, URL]:
    """(kind, URL) of a target: kind is duckdb, mysql or postgresql; else a one-line error."""
    shown = mask_url(target)
    try:
        url = make_url(target)
    except ArgumentError:
        raise ConfigError(f"target {shown!r} is not a database URL; use {SUPPORTED}") from None
    scheme, _, driver = url.drivername.partition("+")
    if scheme not in _SCHEMES:
        raise ConfigError(f"target {shown!r}: unsupported database {scheme!r}; use {SUPPORTED}")
    kind, drivers = _SCHEMES[scheme]
    if driver not in drivers:
        raise ConfigError(
            f"target {shown!r}: driver {driver!r} is not supported; use {_DRIVER[kind]}://"
        )
    if not url.database:
        raise ConfigError(f"target {shown!r} names no database; use {SUPPORTED}")
    return kind, url


def connect_server(target: str, allow_slow_insert: bool = False) -> ServerTarget:
    """A connected MySQL/MariaDB or PostgreSQL target (connect timeout 10 s)."""
    kind, url = parse_target(target)
    shown = mask_url(target)
    if kind == "mysql":
        from deepcvr.load.mysql_target import MySQLTarget

        return MySQLTarget.connect(url, shown, allow_slow_insert)
    if kind == "postgresql":
        from deepcvr.load.postgres_target import PostgresTarget

        return PostgresTarget.connect(url, shown)
    raise ConfigError(f"target {shown!r} is not a server database")


def load(
    parquet_dir: Path,
    target: str,
    replace: bool = False,
    enforce_keys_max_rows: int | None = None,
    allow_slow_insert: bool = False,
    memory_mb: int = DUCKDB_MEMORY_MB,
) -> dict[str, Any]:
    kind, url = parse_target(target)
    if enforce_keys_max_rows is None:
        enforce_keys_max_rows = ENFORCE_KEYS_MAX_ROWS[kind]
    inp = inspect_parquet(parquet_dir)  # before any connection: bad input changes nothing
    if kind == "duckdb":
        from deepcvr.load.duckdb_target import load_duckdb

        summary = load_duckdb(
            inp, Path(url.database or ""), replace, enforce_keys_max_rows, memory_mb
        )
    else:
        from deepcvr.load.sql_target import load_server

        server = connect_server(target, allow_slow_insert)
        summary = load_server(server, inp, replace, enforce_keys_max_rows)
    summary["enforce_keys_max_rows"] = enforce_keys_max_rows
    return summary


@contextmanager
def open_query(target: str) -> Iterator[Query]:
    """A read-only `query(sql) -> rows` on any target; driver errors become TargetError."""
    kind, url = parse_target(target)
    shown = mask_url(target)
    if kind == "duckdb":
        import duckdb

        path = Path(url.database or "")
        if not path.is_file():
            raise TargetError(f"{path}: database not found; run the load step first")
        con = duckdb.connect(str(path), read_only=True)
        errors: tuple[type[Exception], ...] = (duckdb.Error,)
        run: Query = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        close = con.close
    else:
        server = connect_server(target)
        errors, run, close = server.driver_errors, server.query, server.close

    def query(sql: str) -> list[tuple[Any, ...]]:
        try:
            return list(run(sql))
        except errors as err:
            first = " ".join(str(err).split())
            raise TargetError(f"{shown}: query failed ({first}); run the load step first") from None

    try:
        yield query
    finally:
        close()


def run_load(ctx: OpContext, params: LoadParams) -> dict[str, Any]:
    parquet_dir = Path(params.input) if params.input else ctx.workspace / "parquet"
    summary = load(
        parquet_dir,
        params.target,
        params.replace,
        params.enforce_keys_max_rows,
        params.allow_slow_insert,
        params.memory_mb,
    )
    if ctx.store is not None:
        for check in summary.get("checks", []):
            ctx.store.record(ctx.run_id, ctx.task, "load_check", check["name"], check)
    from deepcvr.schema import TABLES

    summary["assets"] = [
        {
            "uri": f"{mask_url(params.target)}#{name}",
            "kind": "table",
            "rows": info.get("rows"),
            "schema": {c.name: c.type for c in TABLES[name].columns} if name in TABLES else None,
        }
        for name, info in summary.get("tables", {}).items()
    ]
    return summary
