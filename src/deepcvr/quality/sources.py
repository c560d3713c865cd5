"""Inputs of the quality ops: the loaded database, the transform's accounting, the raw files.

The accounting comes from the `_manifest.json` files of a Parquet directory (per split and file)
or, failing that, from the metadata store's `accounting` records (per split only).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from deepcvr.aliccp import common_name, raw_files, skeleton_name, split_dir
from deepcvr.errors import ConfigError, TargetError
from deepcvr.metadata import STORE_DIR, STORE_FILE, MetadataStore
from deepcvr.schema import MANIFEST

log = logging.getLogger("deepcvr")

LOAD_OP = "load.database"
RUNS_SEARCHED = 200  # how far back in history a default target or accounting is looked for

# A raw skeleton line labelled click 0, conversion 1; the same pattern runs on the raw bytes
# and, as SQL, on the raw text of rejected lines, so both sides count the same lines.
NOCLICK_CONVERSION_BYTES = re.compile(rb"\n[^,\n]*,0,1,")
NOCLICK_CONVERSION_SQL = "^[^,]*,0,1,"
READ_BLOCK = 64 << 20

ACCOUNTING_COUNTERS = (
    "bytes",
    "lines",
    "loaded_lines",
    "rejected_lines",
    "flagged_lines",
    "crlf_lines",
    "raw_structures",
    "loaded_structures",
    "rejected_structures",
)


def duckdb_file(target: str) -> Path | None:
    """The database file of a `duckdb:///PATH` URL; None for a server database."""
    from deepcvr.load.database import parse_target

    kind, url = parse_target(target)
    if kind != "duckdb":
        return None
    path = Path(url.database or "")
    if not path.is_file():
        raise TargetError(f"{path}: database not found; run the load step first")
    return path


def connect(target: str, parquet: Path | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only DuckDB connection to query the loaded tables with one SQL dialect.

    A DuckDB target is opened directly. For MySQL/MariaDB and PostgreSQL, the tables are DuckDB
    views over the Parquet hand-off that was loaded, after checking that the server holds
    exactly as many rows per table (the load verified keys and counts on the server itself);
    the server's key catalogue is copied so key checks know what is enforced there."""
    path = duckdb_file(target)
    if path is not None:
        try:
            return duckdb.connect(str(path), read_only=True)
        except duckdb.Error as err:
            message = str(err).splitlines()[0]
            raise TargetError(f"{path}: cannot open the database ({message})") from None
    return _server_as_views(target, parquet)


def _server_as_views(target: str, parquet: Path | None) -> duckdb.DuckDBPyConnection:
    from deepcvr.load.database import open_query
    from deepcvr.load.parquet_input import inspect_parquet
    from deepcvr.load.verify import KEYS_COLUMNS, KEYS_TABLE
    from deepcvr.schema import MODEL, REJECTS, create_table_sql
    from deepcvr.secrets import mask_url

    if parquet is None or not parquet.is_dir():
        raise ConfigError(
            f"target {mask_url(target)}: the quality ops read a server database through the "
            "Parquet directory it was loaded from; pass --parquet DIR"
        )
    inp = inspect_parquet(parquet)
    splits = ", ".join(f"'{split}'" for split in inp.splits)
    con = duckdb.connect()
    with open_query(target) as query:
        for table in (*MODEL, REJECTS):
            files = inp.tables[table.name].files
            # Each split lists the features it uses; the loaded table is their union.
            distinct = "DISTINCT " if table.name == "feature" else ""
            if files:
                con.execute(
                    f"CREATE VIEW {table.name} AS SELECT {distinct}* FROM read_parquet("
                    f"{[str(f) for f in files]!r})"
                )
            else:
                con.execute(create_table_sql(table, "duckdb"))
            # Splits loaded earlier from elsewhere may sit beside these: compare ours only.
            has_split = "split" in table.column_names
            where = f" WHERE split IN ({splits})" if has_split else ""
            server_rows = query(f"SELECT count(*) FROM {table.name}{where}")[0][0]
            parquet_rows = con.execute(f"SELECT count(*) FROM {table.name}").fetchone()[0]  # type: ignore[index]
            if server_rows < parquet_rows or (has_split and server_rows != parquet_rows):
                raise TargetError(
                    f"{mask_url(target)}: table {table.name} has {server_rows:,} rows but "
                    f"{parquet} has {parquet_rows:,}; load it again"
                )
        keys = query(f"SELECT {', '.join(KEYS_COLUMNS)} FROM {KEYS_TABLE}")
    con.execute(
        f"CREATE TABLE {KEYS_TABLE} (table_name VARCHAR, kind VARCHAR, columns VARCHAR, "
        "ref_table VARCHAR, ref_columns VARCHAR, enforced BOOLEAN, violations BIGINT)"
    )
    if keys:
        con.executemany(
            f"INSERT INTO {KEYS_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)", [tuple(r) for r in keys]
        )
    return con


@dataclass(frozen=True)
class LoadedTarget:
    """The target of the latest successful load task, and where its inputs live."""

    target: str
    workspace: Path
    parquet: Path | None  # the load task's input, when it named one
    run_id: str


def _stores(workspace: Path) -> list[Path]:
    """The workspace's own store first, then stores of sub-workspaces (data/demo/...), newest
    first; like `deepcvr status`, so `deepcvr report` finds the demo's database."""
    own = workspace / STORE_DIR / STORE_FILE
    subs = [p for p in workspace.glob(f"*/{STORE_DIR}/{STORE_FILE}") if p.is_file()]
    subs.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return ([own] if own.is_file() else []) + subs


def latest_load(workspace: Path) -> LoadedTarget | None:
    """The newest run's successful load task; a task named `load` wins over others (the demo
    also loads a sample database)."""
    for path in _stores(workspace):
        store = MetadataStore(path, create=False)
        for run in store.runs(RUNS_SEARCHED):
            loads = [
                t
                for t in store.task_runs(run["run_id"])
                if t["op"] == LOAD_OP and t["status"] == "succeeded" and t["result_json"]
            ]
            loads.sort(key=lambda t: t["task"] != "load")
            for task in loads:
                target = json.loads(task["result_json"]).get("target")
                if not target:
                    continue
                params = json.loads(run["params_json"] or "{}")
                given = params.get("tasks", {}).get(task["task"], {}).get("with", {}).get("input")
                return LoadedTarget(
                    target, path.parent.parent, Path(given) if given else None, run["run_id"]
                )
    return None


def resolve_target(workspace: Path, target: str | None) -> tuple[str, Path, Path | None]:
    """(target URL, workspace of its outputs, Parquet dir of its load) for a quality op."""
    if target:
        return target, workspace, None
    found = latest_load(workspace)
    if found is None:
        raise ConfigError(
            f"no successful load task recorded in the metadata store of {workspace}; "
            "pass --target duckdb:///PATH or --workspace DIR (the pipeline's workspace)"
        )
    log.info("target %s (load task of run %s)", found.target, found.run_id)
    return found.target, found.workspace, found.parquet


def read_manifests(parquet_dir: Path | None) -> dict[str, dict[str, Any]]:
    """split -> transform manifest, for the splits the Parquet directory holds."""
    if parquet_dir is None or not parquet_dir.is_dir():
        return {}
    manifests = {}
    for path in sorted(parquet_dir.glob(f"*/{MANIFEST}")):
        try:
            manifests[path.parent.name] = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            log.warning("%s: unreadable manifest (%s); ignored", path, err)
    return manifests


def accounting_from_store(store: MetadataStore | None) -> dict[str, dict[str, Any]]:
    """split -> the newest `accounting` record of that split (per-split totals)."""
    found: dict[str, dict[str, Any]] = {}
    if store is None:
        return found
    for run in store.runs(RUNS_SEARCHED):
        for record in store.records(run["run_id"], "accounting"):
            if record["key"] not in found and isinstance(record["value"], dict):
                found[record["key"]] = record["value"]
    return found


def accounting_rows(
    manifests: dict[str, dict[str, Any]], records: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per split and file (manifests) or per split (store records, file "*")."""
    rows = []
    for split, manifest in sorted(manifests.items()):
        for name, info in sorted(manifest.get("files", {}).items()):
            counts = {k: int(info.get(k, 0)) for k in ACCOUNTING_COUNTERS}
            rows.append(
                {"split": split, "file": name, "kind": info.get("kind"), "source": "manifest"}
                | counts
            )
    for split, totals in sorted(records.items()):
        if split not in manifests:
            counts = {k: int(totals.get(k, 0)) for k in ACCOUNTING_COUNTERS}
            rows.append({"split": split, "file": "*", "kind": None, "source": "metadata"} | counts)
    return rows


def file_kind(split: str, file: str) -> str | None:
    return {skeleton_name(split): "skeleton", common_name(split): "common"}.get(file)


def raw_skeleton(raw_dir: Path | None, split: str) -> Path | None:
    if raw_dir is None or not raw_dir.is_dir():
        return None
    path = raw_files(split_dir(raw_dir, split), split)[1]
    return path if path.is_file() else None


def count_noclick_conversions(path: Path) -> int:
    """Lines of a raw skeleton file labelled (click 0, conversion 1): a C-speed regex scan of
    line-aligned blocks, no per-line Python."""
    count = 0
    carry = b"\n"  # each block is scanned with the newline that precedes its first line
    with path.open("rb") as f:
        while block := f.read(READ_BLOCK):
            data = carry + block
            cut = data.rfind(b"\n")  # >= 0: data starts with a newline
            count += len(NOCLICK_CONVERSION_BYTES.findall(data, 0, cut))
            carry = data[cut:]
    count += len(NOCLICK_CONVERSION_BYTES.findall(carry))  # a last line without a newline
    return count
