"""The metadata store: runs, task runs, records (checks, accounting) and assets, in SQLite.

WAL mode lets `deepcvr status` read while a run writes; each write is its own short
transaction on its own connection, so tasks in threads (or processes) can all record safely.
Everything stored passes through `mask_secrets`.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deepcvr.errors import DeepCVRError
from deepcvr.secrets import mask_secrets, mask_text

SCHEMA_VERSION = 1
STORE_DIR = ".deepcvr"
STORE_FILE = "metadata.sqlite"
BUSY_TIMEOUT_MS = 30_000

RUN_STATUSES = ("running", "succeeded", "failed", "interrupted")
TASK_STATUSES = ("pending", "running", "succeeded", "failed", "skipped", "interrupted")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    pipeline_file TEXT,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    status TEXT NOT NULL,
    params_json TEXT,
    error TEXT,
    pid INTEGER,
    host TEXT
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE TABLE IF NOT EXISTS task_runs (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    task TEXT NOT NULL,
    op TEXT NOT NULL,
    started_at TEXT,
    ended_at TEXT,
    status TEXT NOT NULL,
    duration_s REAL,
    error TEXT,
    result_json TEXT,
    PRIMARY KEY (run_id, task)
);
CREATE TABLE IF NOT EXISTS records (
    record_id INTEGER PRIMARY KEY,
    run_id TEXT,
    task TEXT,
    kind TEXT NOT NULL,
    key TEXT,
    value_json TEXT,
    recorded_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_run_kind ON records (run_id, kind);
CREATE TABLE IF NOT EXISTS assets (
    asset_id INTEGER PRIMARY KEY,
    uri TEXT NOT NULL,
    kind TEXT,
    bytes INTEGER,
    checksum TEXT,
    rows INTEGER,
    run_id TEXT,
    task TEXT,
    created_at TEXT NOT NULL,
    schema_json TEXT
);
CREATE INDEX IF NOT EXISTS assets_run ON assets (run_id);
CREATE INDEX IF NOT EXISTS assets_uri ON assets (uri);
CREATE TABLE IF NOT EXISTS task_state (
    pipeline TEXT NOT NULL,
    task TEXT NOT NULL,
    op TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    outputs_json TEXT NOT NULL,
    run_id TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    PRIMARY KEY (pipeline, task)
);
CREATE TABLE IF NOT EXISTS lineage (
    edge_id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    task TEXT NOT NULL,
    input_uri TEXT NOT NULL,
    output_uri TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS lineage_in ON lineage (input_uri);
CREATE INDEX IF NOT EXISTS lineage_out ON lineage (output_uri);
"""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def store_path(workspace: str | Path) -> Path:
    return Path(workspace).expanduser() / STORE_DIR / STORE_FILE


def _json(value: Any) -> str | None:
    # default=str: Paths, datetimes and the like are stored as their text.
    return None if value is None else json.dumps(mask_secrets(value), default=str, sort_keys=True)


def _text(value: str | None) -> str | None:
    return None if value is None else mask_text(value)


class MetadataStore:
    """Runs and their tasks, records and assets, in `WORKSPACE/.deepcvr/metadata.sqlite`."""

    def __init__(self, path: str | Path, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise DeepCVRError(f"{self.path}: no metadata store here")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._init_schema(create)

    @classmethod
    def for_workspace(cls, workspace: str | Path, create: bool = True) -> MetadataStore:
        return cls(store_path(workspace), create=create)

    # --- connections ---------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error as e:
            raise DeepCVRError(f"{self.path}: cannot open metadata store: {e}") from None
        try:
            con.row_factory = sqlite3.Row
            con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            con.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; no fsync per commit
            yield con
        finally:
            con.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; IMMEDIATE takes the write lock up front (no upgrade
        deadlock between two writers)."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def _init_schema(self, create: bool) -> None:
        with self._connect() as con:
            mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise DeepCVRError(f"{self.path}: cannot switch the metadata store to WAL mode")
        if create:
            with self._write() as con:
                # Not executescript(): it would COMMIT the IMMEDIATE transaction first.
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    con.execute(statement)
                row = con.execute("SELECT max(version) FROM schema_version").fetchone()
                if row[0] is None:
                    con.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        with self._connect() as con:
            row = con.execute("SELECT max(version) FROM schema_version").fetchone()
        if row[0] is not None and row[0] > SCHEMA_VERSION:
            raise DeepCVRError(
                f"{self.path}: metadata schema v{row[0]} is newer than this deepcvr "
                f"(v{SCHEMA_VERSION}); upgrade deepcvr"
            )

    def journal_mode(self) -> str:
        with self._connect() as con:
            return str(con.execute("PRAGMA journal_mode").fetchone()[0])

    # --- runs ----------------------------------------------------------------------------

    def start_run(
        self, run_id: str, pipeline: str, pipeline_file: str | None, params: Any = None
    ) -> None:
        with self._write() as con:
            con.execute(
                "INSERT INTO runs (run_id, pipeline, pipeline_file, started_at, status,"
                " params_json, pid, host) VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
                (
                    run_id,
                    pipeline,
                    pipeline_file,
                    utc_now(),
                    _json(params),
                    os.getpid(),
                    socket.gethostname(),
                ),
            )

    def end_run(self, run_id: str, status: str, error: str | None = None) -> None:
        _check(status, RUN_STATUSES)
        with self._write() as con:
            con.execute(
                "UPDATE runs SET ended_at = ?, status = ?, error = ? WHERE run_id = ?",
                (utc_now(), status, _text(error), run_id),
            )

    def run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        return rows[0] if rows else None

    def latest_run(self) -> dict[str, Any] | None:
        rows = self.runs(limit=1)
        return rows[0] if rows else None

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        return self._query(
            "SELECT * FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?", (limit,)
        )

    # --- task runs -----------------------------------------------------------------------

    def plan_tasks(self, run_id: str, tasks: list[tuple[str, str]]) -> None:
        """Insert every (task, op) of a run as pending, in run order."""
        with self._write() as con:
            con.executemany(
                "INSERT INTO task_runs (run_id, task, op, status) VALUES (?, ?, ?, 'pending')",
                [(run_id, task, op) for task, op in tasks],
            )

    def start_task(self, run_id: str, task: str, op: str) -> None:
        with self._write() as con:
            con.execute(
                "INSERT INTO task_runs (run_id, task, op, started_at, status)"
                " VALUES (?, ?, ?, ?, 'running') ON CONFLICT (run_id, task) DO UPDATE SET"
                " started_at = excluded.started_at, status = 'running'",
                (run_id, task, op, utc_now()),
            )

    def end_task(
        self,
        run_id: str,
        task: str,
        status: str,
        error: str | None = None,
        result: Any = None,
        duration_s: float | None = None,
    ) -> None:
        _check(status, TASK_STATUSES)
        ended = None if status == "skipped" else utc_now()
        with self._write() as con:
            con.execute(
                "UPDATE task_runs SET ended_at = ?, status = ?, error = ?, result_json = ?,"
                " duration_s = ? WHERE run_id = ? AND task = ?",
                (ended, status, _text(error), _json(result), duration_s, run_id, task),
            )

    def task_runs(self, run_id: str) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM task_runs WHERE run_id = ? ORDER BY rowid", (run_id,))

    # --- records and assets --------------------------------------------------------------

    def record(self, run_id: str | None, task: str | None, kind: str, key: str, value: Any) -> None:
        """Store one fact (a check result, an accounting figure, ...) as JSON."""
        with self._write() as con:
            con.execute(
                "INSERT INTO records (run_id, task, kind, key, value_json, recorded_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, task, kind, key, _json(value), utc_now()),
            )

    def records(self, run_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM records WHERE run_id = ?"
        args: tuple[Any, ...] = (run_id,)
        if kind is not None:
            sql, args = sql + " AND kind = ?", (*args, kind)
        rows = self._query(sql + " ORDER BY record_id", args)
        for row in rows:
            row["value"] = json.loads(row["value_json"]) if row["value_json"] else None
        return rows

    def add_asset(
        self,
        uri: str,
        kind: str,
        bytes: int | None = None,  # shadows the builtin to match the column
        checksum: str | None = None,
        rows: int | None = None,
        run_id: str | None = None,
        task: str | None = None,
        schema: Any = None,
    ) -> int:
        with self._write() as con:
            cur = con.execute(
                "INSERT INTO assets (uri, kind, bytes, checksum, rows, run_id, task, created_at,"
                " schema_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    mask_text(uri),
                    kind,
                    bytes,
                    checksum,
                    rows,
                    run_id,
                    task,
                    utc_now(),
                    _json(schema),
                ),
            )
            return int(cur.lastrowid or 0)

    # --- incremental state and lineage -----------------------------------------------------

    def task_state(self, pipeline: str, task: str) -> dict[str, Any] | None:
        """The fingerprint and outputs of the task's last successful run, if any."""
        rows = self._query(
            "SELECT * FROM task_state WHERE pipeline = ? AND task = ?", (pipeline, task)
        )
        if not rows:
            return None
        rows[0]["outputs"] = json.loads(rows[0]["outputs_json"])
        return rows[0]

    def save_task_state(
        self, pipeline: str, task: str, op: str, fingerprint: str, outputs: Any, run_id: str
    ) -> None:
        with self._write() as con:
            con.execute(
                "INSERT INTO task_state VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (pipeline, task)"
                " DO UPDATE SET op = excluded.op, fingerprint = excluded.fingerprint,"
                " outputs_json = excluded.outputs_json, run_id = excluded.run_id,"
                " finished_at = excluded.finished_at",
                (pipeline, task, op, fingerprint, _json(outputs), run_id, utc_now()),
            )

    def forget_task_state(self, pipeline: str, task: str) -> None:
        with self._write() as con:
            con.execute("DELETE FROM task_state WHERE pipeline = ? AND task = ?", (pipeline, task))

    def add_lineage(self, run_id: str, task: str, inputs: list[str], outputs: list[str]) -> None:
        now = utc_now()
        with self._write() as con:
            con.executemany(
                "INSERT INTO lineage (run_id, task, input_uri, output_uri, recorded_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [(run_id, task, mask_text(i), mask_text(o), now) for i in inputs for o in outputs],
            )

    def lineage(self, uri: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(edges that produced `uri`, edges that used it), newest first."""
        made = self._query(
            "SELECT * FROM lineage WHERE output_uri = ? ORDER BY edge_id DESC", (uri,)
        )
        used = self._query(
            "SELECT * FROM lineage WHERE input_uri = ? ORDER BY edge_id DESC", (uri,)
        )
        return made, used

    def close_stale_runs(self, reason: str) -> list[dict[str, Any]]:
        """Runs still marked running when nobody holds the workspace lock died (killed, power
        cut): mark them and their running tasks interrupted; returns the runs closed."""
        stale = self._query("SELECT * FROM runs WHERE status = 'running'")
        if stale:
            with self._write() as con:
                for run in stale:
                    con.execute(
                        "UPDATE task_runs SET status = 'interrupted', error = ?, ended_at = ?"
                        " WHERE run_id = ? AND status IN ('running', 'pending')",
                        (reason, utc_now(), run["run_id"]),
                    )
                    con.execute(
                        "UPDATE runs SET status = 'interrupted', error = ?, ended_at = ?"
                        " WHERE run_id = ?",
                        (reason, utc_now(), run["run_id"]),
                    )
        return stale

    def assets(self, run_id: str | None = None) -> list[dict[str, Any]]:
        if run_id is None:
            return self._query("SELECT * FROM assets ORDER BY asset_id")
        return self._query("SELECT * FROM assets WHERE run_id = ? ORDER BY asset_id", (run_id,))

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._connect() as con:
            return [dict(row) for row in con.execute(sql, args)]


def _check(status: str, allowed: tuple[str, ...]) -> None:
    if status not in allowed:
        raise ValueError(f"status {status!r} is not one of {', '.join(allowed)}")
