"""The `deepcvr` command line: one Typer app; stage commands are built from the ops' params.

Every DeepCVRError is printed as one `error: ...` line with its exit code (2 for config
mistakes); a traceback is shown only with -v.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Optional

import typer
from pydantic import ValidationError
from rich.table import Table
from rich.tree import Tree
from typer.core import TyperGroup

from deepcvr.cliparams import add_op_command, fail
from deepcvr.errors import ConfigError, DeepCVRError
from deepcvr.logsetup import make_console, setup_logging
from deepcvr.malloc import keep_freed_memory
from deepcvr.metadata import STORE_DIR, STORE_FILE, MetadataStore, store_path
from deepcvr.pipeline.config import load_pipeline, pipeline_json_schema
from deepcvr.pipeline.runner import STATUS_STYLE, format_duration, run_pipeline
from deepcvr.pipeline.yamlio import one_line

log = logging.getLogger("deepcvr")
_state = {"verbose": False}


class ErrorHandlingGroup(TyperGroup):
    """Turns every error out of a command into one line and an exit code."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # usage errors print themselves
            raise
        except DeepCVRError as e:
            log.debug("error details", exc_info=True)
            fail(str(e), e.exit_code)
        except ValidationError as e:
            fail(one_line(e), ConfigError.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except BrokenPipeError:
            # The reader went away (`deepcvr ... | head`): nothing to report. Point stdout at
            # /dev/null so the interpreter's final flush does not fail a second time.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(1) from None
        except Exception as e:
            if _state["verbose"]:
                traceback.print_exc()
            fail(f"internal error: {type(e).__name__}: {e} (run with -v for the traceback)", 1)


app = typer.Typer(
    cls=ErrorHandlingGroup,
    name="deepcvr",
    help="Ali-CCP from archives to a verified 3NF database, with justified stratified samples.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # tracebacks only with -v, printed by ErrorHandlingGroup
)


@app.callback()
def _global(
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging and tracebacks."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Warnings and errors only."),
) -> None:
    """Ali-CCP from archives to a verified 3NF database, with justified stratified samples."""
    _state["verbose"] = verbose
    setup_logging(verbose=verbose, quiet=quiet)


SET_OPTION = typer.Option(
    None, "--set", metavar="KEY=VALUE", help="Override a param (KEY) or a dotted YAML path."
)


@app.command()
def run(
    pipeline: str = typer.Argument(..., metavar="PIPELINE.yaml", help="Pipeline file."),
    set_: Optional[list[str]] = SET_OPTION,  # noqa: UP045 - Typer needs Optional here
    force: bool = typer.Option(False, "--force", help="Redo work even if outputs are up to date."),
    from_: Optional[str] = typer.Option(  # noqa: UP045
        None, "--from", metavar="TASK", help="Run TASK and its dependants only."
    ),
) -> None:
    """Run a pipeline: tasks in dependency order, independent ones in parallel."""
    result = run_pipeline(load_pipeline(Path(pipeline), set_ or ()), force=force, from_task=from_)
    if result.failed:
        first, more = result.failed[0], len(result.failed) - 1
        extra = f" (and {more} more failed task{'s' * (more > 1)})" if more else ""
        fail(f"task {first} failed: {result.tasks[first].error}{extra}", result.exit_code)


@app.command()
def validate(
    pipeline: Optional[str] = typer.Argument(  # noqa: UP045
        None, metavar="[PIPELINE.yaml]", help="Pipeline file to check."
    ),
    schema: bool = typer.Option(False, "--schema", help="Print the JSON Schema of pipelines."),
    set_: Optional[list[str]] = SET_OPTION,  # noqa: UP045
) -> None:
    """Check a pipeline file without running it, or print the pipeline JSON Schema."""
    if schema:
        typer.echo(json.dumps(pipeline_json_schema(), indent=2))
        return
    if pipeline is None:
        raise ConfigError("validate: give PIPELINE.yaml, or --schema for the JSON Schema")
    p = load_pipeline(Path(pipeline), set_ or ())
    typer.echo(f"{pipeline}: ok: pipeline {p.name}, tasks {', '.join(p.order())}")


# Stage commands: built from the op params models, so a new field is a new option.
add_op_command(app, "generate", "synth.generate", {"out": "OUT_DIR"})
add_op_command(app, "download", "extract.download", {"source": "SOURCE", "output": "OUT_DIR"})
add_op_command(
    app, "decompress", "extract.decompress", {"source": "ARCHIVE_DIR", "output": "RAW_DIR"}
)
add_op_command(app, "transform", "transform.aliccp", {"input": "RAW_DIR", "output": "OUT_DIR"})
add_op_command(app, "load", "load.database", {"input": "PARQUET_DIR"})
add_op_command(app, "report", "quality.report")
add_op_command(app, "sample", "sample.stratified", {"input": "RAW_DIR", "output": "OUT_DIR"})


# --- status and history -----------------------------------------------------------------------

STATUS_WORKSPACE = typer.Option(
    None,
    "--workspace",
    envvar="DEEPCVR_WORKSPACE",
    help="Workspace directory (default: newest store in ., ./data or ./data/*/).",
)


@app.command()
def status(workspace: Optional[str] = STATUS_WORKSPACE) -> None:  # noqa: UP045
    """Show the latest run and its tasks."""
    store = _open_store(workspace)
    latest = store.latest_run() if store else None
    if store is None or latest is None:
        typer.echo(f"no runs recorded{_where(store, workspace)}")
        return
    console = make_console()
    console.print(
        f"run [bold]{latest['run_id']}[/]  pipeline {latest['pipeline']}  "
        f"status {_styled(_run_status(latest))}  started {_time(latest['started_at'])}  "
        f"duration {format_duration(_duration(latest))}"
    )
    if latest["error"]:
        console.print(f"error: {latest['error']}", markup=False)
    table = Table(title_justify="left")
    for column in ("task", "op", "status", "started", "duration", "error"):
        table.add_column(column, overflow="fold")
    for t in store.task_runs(latest["run_id"]):
        table.add_row(
            t["task"],
            t["op"],
            _styled(t["status"]),
            _time(t["started_at"]),
            format_duration(t["duration_s"]),
            (t["error"] or "").splitlines()[0] if t["error"] else "",
        )
    console.print(table)


@app.command()
def history(
    workspace: Optional[str] = STATUS_WORKSPACE,  # noqa: UP045
    limit: int = typer.Option(20, "--limit", min=1, help="Number of runs to show."),
) -> None:
    """List recent runs, newest first."""
    store = _open_store(workspace)
    runs = store.runs(limit) if store else []
    if not runs:
        typer.echo(f"no runs recorded{_where(store, workspace)}")
        return
    table = Table(title_justify="left")
    for column in ("run", "pipeline", "status", "started", "duration", "error"):
        table.add_column(column, overflow="fold")
    for r in runs:
        error = (r["error"] or "").splitlines()[0] if r["error"] else ""
        table.add_row(
            r["run_id"],
            r["pipeline"],
            _styled(_run_status(r)),
            _time(r["started_at"]),
            format_duration(_duration(r)),
            error,
        )
    make_console().print(table)


@app.command()
def lineage(
    asset: str = typer.Argument(..., metavar="ASSET", help="A file, directory or target URL."),
    workspace: Optional[str] = STATUS_WORKSPACE,  # noqa: UP045
) -> None:
    """Show where an asset came from (upstream, recursively) and what used it."""
    store = _open_store(workspace)
    if store is None:
        fail(f"no metadata store found{_where(store, workspace)}", 1)
    uri = asset if "://" in asset else str(Path(asset).resolve())
    made, used = store.lineage(uri)
    known = [a for a in store.assets() if a["uri"] == uri]
    if not made and not used and not known:
        fail(f"{asset}: no such asset recorded in {store.path}; see `deepcvr status`", 1)
    tree = Tree(f"[bold]{uri}[/]")
    if known:
        a = known[-1]
        tree.add(
            f"{a['kind']}, {a['bytes'] or 0:,} bytes, checksum {a['checksum']}, "
            f"made by {a['task']} in run {a['run_id']} at {_time(a['created_at'])}"
        )
    _upstream(store, tree.add("came from"), uri, seen=set())
    users = tree.add("used by")
    for run_id, task in dict.fromkeys((e["run_id"], e["task"]) for e in used):
        outputs = sorted(
            {e["output_uri"] for e in used if (e["run_id"], e["task"]) == (run_id, task)}
        )
        users.add(f"{task} (run {run_id}) -> {', '.join(outputs)}")
    make_console().print(tree)


def _upstream(store: MetadataStore, node: Tree, uri: str, seen: set[str]) -> None:
    made, _ = store.lineage(uri)
    if not made or uri in seen:
        return
    seen.add(uri)
    run_id, task = made[0]["run_id"], made[0]["task"]  # the newest production
    branch = node.add(f"{task} (run {run_id})")
    for edge in made:
        if (edge["run_id"], edge["task"]) == (run_id, task):
            child = branch.add(edge["input_uri"])
            _upstream(store, child, edge["input_uri"], seen)


def _find_store(workspace: str | None) -> Path | None:
    if workspace:
        return store_path(workspace)
    candidates = [Path(STORE_DIR, STORE_FILE), Path("data", STORE_DIR, STORE_FILE)]
    candidates += sorted(Path("data").glob(f"*/{STORE_DIR}/{STORE_FILE}"))
    found = [p for p in candidates if p.is_file()]
    # WAL: recent writes touch the -wal file, not the database file itself.
    return max(found, key=_mtime) if found else None


def _mtime(path: Path) -> float:
    wal = path.with_name(path.name + "-wal")
    return max(path.stat().st_mtime, wal.stat().st_mtime if wal.exists() else 0.0)


def _open_store(workspace: str | None) -> MetadataStore | None:
    path = _find_store(workspace)
    if path is None or not path.is_file():
        return None
    log.debug("metadata store %s", path)
    return MetadataStore(path, create=False)


def _where(store: MetadataStore | None, workspace: str | None) -> str:
    if store is not None:
        return f" in {store.path}"
    if workspace:
        return f" (no metadata store in {workspace})"
    return " (no metadata store in ., ./data or ./data/*/; use --workspace)"


def _run_status(run: dict[str, Any]) -> str:
    """A run still marked running whose process is gone was killed: say so."""
    if run["status"] != "running" or run["host"] != socket.gethostname() or not run["pid"]:
        return str(run["status"])
    try:
        os.kill(run["pid"], 0)
    except ProcessLookupError:
        return "running (process gone: killed?)"
    except PermissionError:
        pass
    return "running"


def _styled(status: str) -> str:
    style = STATUS_STYLE.get(status.split()[0], "")
    return f"[{style}]{status}[/]" if style else status


def _time(iso: str | None) -> str:
    return f"{iso[:19].replace('T', ' ')}Z" if iso else ""


def _duration(run: dict[str, Any]) -> float | None:
    if not run["started_at"]:
        return None
    start = datetime.fromisoformat(run["started_at"])
    end = datetime.fromisoformat(run["ended_at"]) if run["ended_at"] else datetime.now(UTC)
    return (end - start).total_seconds()


def main() -> None:
    """Console entry point (`deepcvr`)."""
    keep_freed_memory()
    try:
        app(prog_name="deepcvr")
    except SystemExit as e:
        if e.code == 130:  # Ctrl-C: op threads cannot be stopped, so do not wait for them
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        raise
