"""Run a validated pipeline: ready tasks run in parallel; a failure stops only its dependants."""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from deepcvr import cancel
from deepcvr.errors import ConfigError, DeepCVRError
from deepcvr.logsetup import make_console
from deepcvr.metadata import MetadataStore
from deepcvr.pipeline import dag, incremental
from deepcvr.pipeline.config import Pipeline, known_ops
from deepcvr.pipeline.lock import workspace_lock
from deepcvr.pipeline.ops import OpContext, OpParams, OpSpec
from deepcvr.secrets import mask_text

log = logging.getLogger("deepcvr")

STOP_GRACE_SECONDS = 60.0  # how long running ops get to stop cleanly after Ctrl-C

STATUS_STYLE = {
    "succeeded": "green",
    "failed": "bold red",
    "skipped": "yellow",
    "interrupted": "bold magenta",
    "running": "cyan",
    "pending": "dim",
}


@dataclass
class TaskOutcome:
    op: str
    status: str = "pending"
    error: str | None = None
    result: dict[str, Any] | None = None
    duration_s: float | None = None
    note: str | None = None  # why a task was skipped
    exit_code: int = 0  # the DeepCVRError's exit code when the task failed


@dataclass
class RunResult:
    run_id: str
    status: str
    tasks: dict[str, TaskOutcome] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [name for name, t in self.tasks.items() if t.status == "failed"]

    @property
    def exit_code(self) -> int:
        """0 on success, else the exit code of the first failed task's error."""
        return next((self.tasks[n].exit_code or 1 for n in self.failed), 0)


def new_run_id() -> str:
    """`YYYYmmddTHHMMSS-<6 hex>` in UTC: sorts by time, unique across concurrent runs."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def run_pipeline(
    pipeline: Pipeline,
    force: bool = False,
    from_task: str | None = None,
    store: MetadataStore | None = None,
    table: bool = True,
) -> RunResult:
    """Run every task (or `from_task` and its dependants), record it all, print a summary."""
    graph = pipeline.graph
    order = pipeline.order()
    skip: dict[str, str] = {}  # task -> why it will not run
    if from_task is not None:
        if from_task not in graph:
            raise ConfigError(f"--from {from_task}: unknown task (tasks: {', '.join(order)})")
        keep = {from_task} | dag.dependants(graph, from_task)
        before = dag.ancestors(graph, from_task)
        for name in order:
            if name not in keep:
                where = "before" if name in before else "not downstream of"
                skip[name] = f"{where} --from {from_task}"

    workspace = pipeline.workspace
    workspace.mkdir(parents=True, exist_ok=True)
    store = store or MetadataStore.for_workspace(workspace)
    run_id = new_run_id()
    ops = known_ops()
    outcomes = {name: TaskOutcome(op=pipeline.config.tasks[name].op) for name in order}
    with workspace_lock(workspace, run_id, store):
        source = str(pipeline.path) if pipeline.path else None
        store.start_run(
            run_id, pipeline.name, source, {**pipeline.masked, "force": force, "from": from_task}
        )
        store.plan_tasks(run_id, [(name, outcomes[name].op) for name in order])
        log.info(
            "run %s: pipeline %s, %d task(s), workspace %s",
            run_id,
            pipeline.name,
            len(order),
            workspace,
        )
        started = time.monotonic()
        cancel.reset()

        executor = ThreadPoolExecutor(pipeline.config.max_parallel, thread_name_prefix="deepcvr")
        running: dict[Future[None], str] = {}
        reran: set[str] = set()  # tasks that ran in this run: their dependants must run too
        try:
            ts = dag.sorter(graph)
            ts.prepare()
            while ts.is_active():
                skipped_now = False
                for name in sorted(ts.get_ready()):
                    if name in skip:
                        _skip(store, run_id, name, outcomes[name], skip[name])
                        ts.done(name)
                        skipped_now = True
                        continue
                    ctx = OpContext(
                        workspace=workspace, run_id=run_id, task=name, force=force, store=store
                    )
                    spec = ops[outcomes[name].op]
                    upstream = sorted(reran & dag.ancestors(graph, name))
                    decision = incremental.decide(
                        store,
                        pipeline.name,
                        name,
                        spec,
                        ctx,
                        pipeline.task_params[name],
                        forced=force or (from_task is not None),
                        upstream_ran=upstream,
                    )
                    if not decision.run:
                        _skip(store, run_id, name, outcomes[name], decision.reason)
                        ts.done(name)
                        skipped_now = True
                        continue
                    log.info("task %s will run: %s", name, decision.reason)
                    reran.add(name)
                    outcomes[name].status = "running"
                    fut = executor.submit(
                        _execute,
                        spec,
                        pipeline.task_params[name],
                        ctx,
                        store,
                        outcomes[name],
                        table,
                        decision,
                        pipeline.name,
                    )
                    running[fut] = name
                if skipped_now:
                    continue  # skipping may have made more tasks ready
                if not running:
                    raise RuntimeError("scheduler stalled with tasks left")  # unreachable in a DAG
                done: set[Future[None]] = set()
                while not done:  # short waits: a blocking one holds off Ctrl-C until a task ends
                    done, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
                for fut in done:
                    name = running.pop(fut)
                    fut.result()  # re-raises a KeyboardInterrupt raised inside the task
                    if outcomes[name].status == "failed":
                        for child in dag.dependants(graph, name):
                            skip.setdefault(child, f"upstream task {name} failed")
                    ts.done(name)
        except KeyboardInterrupt:
            # Ops run in threads: ask them to stop at their next checkpoint and give them a moment,
            # so they remove their temp files instead of dying mid-write.
            cancel.request()
            wait(running, timeout=STOP_GRACE_SECONDS)
            executor.shutdown(wait=False, cancel_futures=True)
            _interrupt(store, run_id, outcomes)
            if table:
                _print_table(run_id, "interrupted", outcomes, time.monotonic() - started)
            raise
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)
            store.end_run(run_id, "failed", error="internal error in the runner")
            raise
        executor.shutdown(wait=True)

        failed = [n for n in order if outcomes[n].status == "failed"]
        status = "failed" if failed else "succeeded"
        error = "; ".join(f"{n}: {outcomes[n].error}" for n in failed) or None
        store.end_run(run_id, status, error=error)
        elapsed = time.monotonic() - started
        log.info("run %s %s in %.1f s", run_id, status, elapsed)
        if table:
            _print_table(run_id, status, outcomes, elapsed)
        return RunResult(run_id, status, outcomes)


def _execute(
    spec: OpSpec,
    params: OpParams,
    ctx: OpContext,
    store: MetadataStore,
    out: TaskOutcome,
    loud: bool = True,
    decision: incremental.Decision | None = None,
    pipeline_name: str = "",
) -> None:
    """Run one task in a worker thread and record it; only BaseExceptions escape."""
    store.start_task(ctx.run_id, ctx.task, spec.name)
    log.info("task %s (%s) started", ctx.task, spec.name)
    start = time.monotonic()
    # Until it succeeds again, the task's old outputs are not trusted (it may have half
    # replaced them): forget its state first, so a crash now means a rerun next time.
    store.forget_task_state(pipeline_name, ctx.task)
    try:
        if incremental.clean_leftovers(spec, ctx, params):
            log.info("task %s: removed temp files left by an interrupted run", ctx.task)
        result = spec.func(ctx, params)
        out.status, out.result = "succeeded", result if isinstance(result, dict) else None
        if decision is not None:
            incremental.record_success(store, pipeline_name, spec, ctx, params, decision, result)
    except DeepCVRError as e:
        out.status, out.error, out.exit_code = "failed", mask_text(str(e)), e.exit_code
    except Exception as e:  # a bug or an unexpected library error: keep the run going
        out.status, out.error, out.exit_code = "failed", mask_text(f"{type(e).__name__}: {e}"), 1
        log.debug("task %s traceback", ctx.task, exc_info=True)
    out.duration_s = time.monotonic() - start
    store.end_task(ctx.run_id, ctx.task, out.status, out.error, out.result, out.duration_s)
    if out.status == "failed":
        # A one-command run prints the error itself: log it only in pipeline runs.
        log.log(
            logging.ERROR if loud else logging.DEBUG,
            "task %s failed after %.1f s: %s",
            ctx.task,
            out.duration_s,
            out.error,
        )
    else:
        log.info("task %s succeeded in %.1f s", ctx.task, out.duration_s)


def _skip(store: MetadataStore, run_id: str, name: str, out: TaskOutcome, why: str) -> None:
    out.status, out.note = "skipped", why
    store.end_task(run_id, name, "skipped", error=why)
    log.info("task %s skipped: %s", name, why)


def _interrupt(store: MetadataStore, run_id: str, outcomes: dict[str, TaskOutcome]) -> None:
    for name, out in outcomes.items():
        if out.status == "running":
            out.status, out.error = "interrupted", "interrupted"
            store.end_task(run_id, name, "interrupted", error="interrupted")
        elif out.status == "pending":
            _skip(store, run_id, name, out, "run interrupted")
    store.end_run(run_id, "interrupted", error="interrupted by the user")
    log.warning("run %s interrupted", run_id)


def _print_table(
    run_id: str, status: str, outcomes: dict[str, TaskOutcome], elapsed: float
) -> None:
    table = Table(
        title=f"run {run_id}: {status} in {format_duration(elapsed)}", title_justify="left"
    )
    for column in ("task", "op", "status", "duration", "note"):
        table.add_column(column, overflow="fold")
    for name, out in outcomes.items():
        style = STATUS_STYLE.get(out.status, "")
        note = out.error or out.note or summarize(out.result)
        table.add_row(
            name,
            out.op,
            f"[{style}]{out.status}[/]" if style else out.status,
            format_duration(out.duration_s),
            note.splitlines()[0] if note else "",
        )
    make_console(stderr=True).print(table)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def summarize(result: dict[str, Any] | None, width: int = 80) -> str:
    """`k=v, k=v` of a result's scalar entries, cut to `width` characters."""
    if not result:
        return ""
    parts = [
        f"{k}={v:,}" if isinstance(v, int) and not isinstance(v, bool) else f"{k}={v}"
        for k, v in result.items()
        if isinstance(v, str | int | float | bool | Path)
    ]
    text = mask_text(", ".join(parts))
    return text if len(text) <= width else text[: width - 1] + "…"
