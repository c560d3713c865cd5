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

log = logging.getLogger("deepcvr")

MANIFEST = "_manifest.json"
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


def duckdb_file(target: str) -> Path:
    """The database file of a `duckdb:///PATH` URL; one-line errors for anything else."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(target)
    except ArgumentError:
        raise ConfigError(f"target {target!r} is not a database URL; use duckdb:///PATH") from None
    if url.get_backend_name() != "duckdb" or not url.database:
        raise ConfigError(
            f"target {target!r}: the quality ops read DuckDB targets only; use duckdb:///PATH"
        )
    path = Path(url.database)
    if not path.is_file():
        raise TargetError(f"{path}: database not found; run the load step first")
    return path


def connect(target: str) -> duckdb.DuckDBPyConnection:
    path = duckdb_file(target)
    try:
        return duckdb.connect(str(path), read_only=True)
    except duckdb.Error as err:
        message = str(err).splitlines()[0]
        raise TargetError(f"{path}: cannot open the database ({message})") from None


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
