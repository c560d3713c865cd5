"""MySQL 8 / MariaDB 10.11+ target: LOAD DATA LOCAL INFILE streamed from Parquet through a pipe.

A feeder thread turns Parquet record batches into TSV and writes them into a named pipe while
the server reads the "file" through PyMySQL: decoding overlaps with the server's parsing and
nothing but one batch is ever in memory or on disk.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pymysql
from sqlalchemy.engine import URL

from deepcvr.errors import ConfigError, DataError, DeepCVRError, TargetError
from deepcvr.load.sql_target import OLD, Advance, ServerTarget, one_line
from deepcvr.load.tsv import parquet_batches, tsv_chunks
from deepcvr.schema import ForeignKey, Table

log = logging.getLogger("deepcvr")

CONNECT_TIMEOUT = 10  # seconds; also bounds the handshake of a server that accepts but is silent
INSERT_BATCH_ROWS = 5_000  # PyMySQL folds each executemany into multi-row INSERTs of ~1 MB
LOCAL_INFILE_FIX = (
    "set local_infile=1 on the server (SET GLOBAL local_infile=1, or start it with "
    "--local-infile), or pass --allow-slow-insert to load with multi-row INSERT batches "
    "(much slower)"
)
_LOCAL_INFILE_REFUSED = {1148, 2068, 3948, 4166}  # server or client side
_NO_PRIVILEGE = {1044, 1142, 1143, 1227}
_BAD_DATA = {1048, 1062, 1264, 1265, 1366, 1451, 1452}
LOAD_SQL = (
    "LOAD DATA LOCAL INFILE %s INTO TABLE {name} CHARACTER SET utf8mb4 "
    "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({cols})"
)


class MySQLTarget(ServerTarget):
    dialect = "mysql"
    schema_sql = "DATABASE()"
    # InnoDB stores rows in primary-key order: a key added after the load rebuilds the whole
    # table, while rows that arrive in key order append to it (measured: see docs/targets.md).
    pk_inline = True
    table_options = " ENGINE=InnoDB"
    driver_errors = (pymysql.err.MySQLError,)

    def __init__(
        self, con: pymysql.Connection, shown: str, database: str, allow_slow_insert: bool
    ) -> None:
        super().__init__(con, shown)
        self.database = database
        self.allow_slow_insert = allow_slow_insert
        self.slow = False
        self.bulk_path = "LOAD DATA LOCAL INFILE (streamed through a named pipe)"

    @classmethod
    def connect(cls, url: URL, shown: str, allow_slow_insert: bool = False) -> MySQLTarget:
        extra = {k: v for k, v in url.query.items() if k != "unix_socket"}
        if extra:
            raise ConfigError(f"{shown}: unsupported URL options {', '.join(sorted(extra))}")
        socket = url.query.get("unix_socket")
        try:
            con = pymysql.connect(
                host=url.host or "localhost",
                port=url.port or 3306,
                user=url.username or "",
                password=url.password or "",
                database=url.database,
                unix_socket=socket if isinstance(socket, str) else None,
                local_infile=True,
                autocommit=True,
                charset="utf8mb4",
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=CONNECT_TIMEOUT,
                write_timeout=CONNECT_TIMEOUT,
            )
        except pymysql.err.MySQLError as err:
            raise TargetError(f"{shown}: {_connect_reason(err, url)}") from None
        # The timeouts were for the handshake only: a key build may legitimately take hours.
        con._read_timeout = con._write_timeout = None
        return cls(con, shown, url.database or "", allow_slow_insert)

    def prepare(self) -> None:
        # Staging tables have no secondary keys during the load; foreign keys are added with
        # checks off (in place, no table copy) and proved by the verification queries.
        self.execute(
            "SET SESSION unique_checks = 0, foreign_key_checks = 0, "
            "sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'"
        )
        # Copying kept rows must not lock the live tables against their readers and writers.
        self.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        lock = f"deepcvr.load.{self.database}"[:64]
        if self.query("SELECT GET_LOCK(%s, 0)", (lock,))[0][0] != 1:
            raise TargetError(
                f"{self.shown}: another deepcvr load into {self.database} is running; "
                "wait for it to finish"
            )
        (enabled,) = self.query("SELECT @@GLOBAL.local_infile")[0]
        if str(enabled).upper() not in ("1", "ON"):
            self._refuse_local_infile()

    def _refuse_local_infile(self) -> None:
        if not self.allow_slow_insert:
            raise TargetError(
                f"{self.shown}: the server refuses LOAD DATA LOCAL INFILE (local_infile is "
                f"off); {LOCAL_INFILE_FIX}"
            )
        log.warning(
            "%s: local_infile is off on the server; loading with INSERT batches "
            "(--allow-slow-insert), which is much slower",
            self.shown,
        )
        self.slow = True
        self.bulk_path = "multi-row INSERT batches (--allow-slow-insert)"

    def constraint_name(self, table: Table, fk: ForeignKey, run: str) -> str:
        # InnoDB constraint names are unique per database and survive RENAME TABLE, so the
        # staging constraints cannot reuse the live tables' names.
        return f"fk_{table.name}_{'_'.join(fk.columns)}_{run}"

    def row_estimate(self, name: str) -> int:
        rows = self.query(
            "SELECT table_rows FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_name = %s",
            (name,),
        )
        return int(rows[0][0] or 0) if rows else 0

    # --- bulk path --------------------------------------------------------------------------

    def bulk_load(self, name: str, table: Table, files: Sequence[Path], advance: Advance) -> int:
        if self.slow:
            return self._insert(name, table, files, advance)
        sql = LOAD_SQL.format(name=name, cols=", ".join(table.column_names))
        with tempfile.TemporaryDirectory(prefix="deepcvr-load-") as tmp:
            fifo = os.path.join(tmp, "rows.tsv")
            os.mkfifo(fifo, 0o600)
            feeder = _Feeder(fifo, tsv_chunks(files, table), advance)
            feeder.start()
            refused = False
            try:
                with self.con.cursor() as cur:
                    cur.execute(sql, (fifo,))
                    stored = int(cur.rowcount)
                    cur.execute("SHOW WARNINGS LIMIT 3")
                    warnings = [w for w in cur.fetchall() if w[0] != "Note"]
            except pymysql.err.MySQLError as err:
                if err.args[0] not in _LOCAL_INFILE_REFUSED:
                    raise
                refused = True
            finally:
                feeder.stop()
        if refused:
            # Refused after all (a client-side setting, or the server changed since the
            # check): no row was sent, so the INSERT path may start from scratch.
            self._refuse_local_infile()
            return self._insert(name, table, files, advance)
        if feeder.error is not None:
            raise feeder.error
        if warnings or stored != feeder.rows:
            detail = "; ".join(f"{w[1]}: {w[2]}" for w in warnings) or "no warning given"
            raise DataError(
                f"{table.name}: the server stored {stored:,} of {feeder.rows:,} rows ({detail}); "
                f"nothing was changed in {self.shown}"
            )
        return stored

    def _insert(self, name: str, table: Table, files: Sequence[Path], advance: Advance) -> int:
        marks = ", ".join(["%s"] * len(table.columns))
        sql = f"INSERT INTO {name} ({', '.join(table.column_names)}) VALUES ({marks})"
        rows = 0
        with self.con.cursor() as cur:
            for batch in parquet_batches(files, table, INSERT_BATCH_ROWS):
                rows_ = zip(*(c.to_pylist() for c in batch.columns), strict=True)
                cur.executemany(sql, list(rows_))
                rows += batch.num_rows
                advance(batch.num_rows)
        return rows

    # --- swap and cleanup -------------------------------------------------------------------

    def swap(self, pairs: list[tuple[str, str]], live: set[str], run: str) -> None:
        # One RENAME TABLE statement is atomic for all tables. InnoDB moves foreign keys with
        # their tables: live children follow the live parents to __old, staging ones to final.
        renames, old = [], []
        for staging, final in pairs:
            if final in live:
                old.append(f"{final}{OLD}{run}")
                renames.append(f"{final} TO {old[-1]}")
            renames.append(f"{staging} TO {final}")
        self.execute("RENAME TABLE " + ", ".join(renames))
        if old:
            try:
                self.discard(old)
            except pymysql.err.MySQLError as err:  # the new version is in place already
                log.warning("%s: old tables left behind (%s)", self.shown, _message(err))

    def discard(self, names: Sequence[str]) -> None:
        if names:
            self.execute(f"DROP TABLE IF EXISTS {', '.join(names)}")

    def close(self) -> None:
        with contextlib.suppress(pymysql.err.Error):
            self.con.close()

    def describe(self, err: Exception) -> DeepCVRError:
        code = err.args[0] if err.args and isinstance(err.args[0], int) else 0
        if code in _LOCAL_INFILE_REFUSED:
            return TargetError(
                f"{self.shown}: the server refuses LOAD DATA LOCAL INFILE; {LOCAL_INFILE_FIX}"
            )
        if code in _NO_PRIVILEGE:
            return TargetError(
                f"{self.shown}: the user lacks a privilege the load needs ({_message(err)}); "
                f"grant CREATE, ALTER, DROP, INSERT, SELECT, REFERENCES on {self.database}.* "
                "or use another user; nothing was changed"
            )
        if code in _BAD_DATA:
            return DataError(f"{self.shown}: {_message(err)}; nothing was changed")
        return TargetError(
            f"{self.shown}: load failed, live tables left as they were ({_message(err)})"
        )


def _message(err: Exception) -> str:
    args = err.args
    if len(args) >= 2:
        return f"{args[0]}: {one_line(str(args[1]))}"
    return one_line(str(err))


def _connect_reason(err: Exception, url: URL) -> str:
    code = err.args[0] if err.args and isinstance(err.args[0], int) else 0
    if code == 1045:
        return f"access denied for user {url.username!r}: wrong user or password"
    if code == 1049:
        return f"database {url.database!r} does not exist; create it first"
    if code == 1044:
        return f"user {url.username!r} may not use database {url.database!r}"
    if code in (2003, 2006, 2013):
        where = f"{url.host or 'localhost'}:{url.port or 3306}"
        return f"cannot connect to {where} within {CONNECT_TIMEOUT} s ({_message(err)})"
    return f"cannot connect ({_message(err)})"


class _Feeder(threading.Thread):
    """Writes TSV chunks into the named pipe that the LOAD DATA statement is reading."""

    def __init__(self, fifo: str, chunks: Iterator[tuple[bytes, int]], advance: Advance) -> None:
        super().__init__(name="deepcvr-load-feeder", daemon=True)
        self.fifo, self.chunks, self.advance = fifo, chunks, advance
        self.rows = 0
        self.error: BaseException | None = None
        self._quit = threading.Event()

    def run(self) -> None:
        try:
            fd = self._open()
            if fd is None:
                return
            with os.fdopen(fd, "wb") as out:
                for data, rows in self.chunks:
                    out.write(data)
                    self.rows += rows
                    self.advance(rows)
        except BrokenPipeError:
            pass  # the reader stopped: the statement's own error says why
        except BaseException as err:  # re-raised in the loading thread
            self.error = err

    def _open(self) -> int | None:
        # Poll instead of blocking: if the server fails the statement before it asks for the
        # file, nobody ever opens the pipe for reading, and stop() must still end this thread.
        while not self._quit.is_set():
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as err:
                if err.errno != errno.ENXIO:
                    raise
                time.sleep(0.005)
                continue
            os.set_blocking(fd, True)
            return fd
        return None

    def stop(self) -> None:
        self._quit.set()
        self.join()
