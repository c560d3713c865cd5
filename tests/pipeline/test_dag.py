"""The runner: dependency order, parallelism, failure propagation, --from, interruption."""

from __future__ import annotations

import threading

import pytest
from typer.testing import CliRunner

from deepcvr.cli import app
from deepcvr.errors import ConfigError
from deepcvr.metadata import MetadataStore
from deepcvr.pipeline import dag
from deepcvr.pipeline.config import load_pipeline
from deepcvr.pipeline.ops import REGISTRY, OpSpec
from deepcvr.pipeline.runner import run_pipeline
from tests.conftest import BARRIERS

CHAIN = """\
name: chain
workspace: "{ws}"
max_parallel: 4
tasks:
  c: {op: test.step, needs: [b]}
  b: {op: test.step, needs: [a]}
  a: {op: test.step, with: {sleep: 0.05}}
  d: {op: test.step, needs: [a, c]}
"""

FAILING = """\
name: failing
workspace: "{ws}"
tasks:
  a: {op: test.step, with: {fail: user, message: "disk full at /x"}}
  b: {op: test.step, needs: [a]}
  c: {op: test.step, needs: [b]}
  other: {op: test.step, with: {sleep: 0.05}}
  bug: {op: test.step, with: {fail: bug, message: "bad index"}}
"""


def test_graph_helpers():
    graph = {"a": [], "b": ["a"], "c": ["b"], "d": ["a"], "e": []}
    assert dag.topological_order(graph) == ["a", "e", "b", "d", "c"]
    assert dag.dependants(graph, "a") == {"b", "c", "d"}
    assert dag.ancestors(graph, "c") == {"a", "b"}
    assert dag.find_cycle(graph) is None
    assert dag.find_cycle({"a": ["b"], "b": ["a"]}) in (["a", "b", "a"], ["b", "a", "b"])


def test_order_respects_needs(write_pipeline, calls):
    result = run_pipeline(load_pipeline(write_pipeline(CHAIN)), table=False)
    assert result.status == "succeeded"
    assert calls == ["a", "b", "c", "d"]
    assert result.tasks["a"].result["count"] == 1


def test_independent_tasks_run_concurrently(write_pipeline, calls):
    # Each task waits for the other at a barrier: run one after the other, both would fail.
    BARRIERS["pair"] = threading.Barrier(2)
    path = write_pipeline(
        "name: par\nworkspace: '{ws}'\nmax_parallel: 2\ntasks:\n"
        "  x: {op: test.step, with: {barrier: pair}}\n"
        "  y: {op: test.step, with: {barrier: pair}}\n"
    )
    result = run_pipeline(load_pipeline(path), table=False)
    assert result.status == "succeeded", {n: t.error for n, t in result.tasks.items()}
    assert sorted(calls) == ["x", "y"]


def test_failure_skips_dependants_only(write_pipeline, calls):
    p = load_pipeline(write_pipeline(FAILING))
    result = run_pipeline(p, table=False)
    assert result.status == "failed"
    assert sorted(calls) == ["a", "bug", "other"]
    t = result.tasks
    assert (t["a"].status, t["a"].error, t["a"].exit_code) == ("failed", "disk full at /x", 1)
    assert (t["bug"].status, t["bug"].error) == ("failed", "ValueError: bad index")
    assert (t["b"].status, t["b"].note) == ("skipped", "upstream task a failed")
    assert (t["c"].status, t["c"].note) == ("skipped", "upstream task a failed")
    assert t["other"].status == "succeeded"

    store = MetadataStore.for_workspace(p.workspace)
    run = store.latest_run()
    assert run["run_id"] == result.run_id and run["status"] == "failed"
    rows = {r["task"]: r for r in store.task_runs(result.run_id)}
    assert rows["a"]["status"] == "failed" and rows["a"]["error"] == "disk full at /x"
    assert rows["c"]["status"] == "skipped" and rows["c"]["error"] == "upstream task a failed"
    assert rows["other"]["status"] == "succeeded" and rows["other"]["duration_s"] >= 0.05


def test_cli_run_failure_names_task_and_error(write_pipeline, calls):
    path = write_pipeline(FAILING.replace("  bug:", "  #bug:"))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 1
    assert "error: task a failed: disk full at /x" in result.stderr
    assert "Traceback" not in result.output
    assert "upstream task a failed" in result.stderr  # the summary table


def test_from_runs_task_and_dependants(write_pipeline, calls):
    p = load_pipeline(write_pipeline(CHAIN))
    result = run_pipeline(p, from_task="b", table=False)
    assert result.status == "succeeded"
    assert calls == ["b", "c", "d"]
    assert (result.tasks["a"].status, result.tasks["a"].note) == ("skipped", "before --from b")
    with pytest.raises(ConfigError, match="--from zz: unknown task"):
        run_pipeline(p, from_task="zz", table=False)


def test_interrupt_marks_run_and_running_tasks(write_pipeline, calls):
    p = load_pipeline(
        write_pipeline(
            "name: int\nworkspace: '{ws}'\ntasks:\n"
            "  a: {op: test.step, with: {fail: interrupt}}\n"
            "  b: {op: test.step, needs: [a]}\n"
        )
    )
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(p, table=False)
    store = MetadataStore.for_workspace(p.workspace)
    run = store.latest_run()
    assert run["status"] == "interrupted"
    rows = {r["task"]: r["status"] for r in store.task_runs(run["run_id"])}
    assert rows == {"a": "interrupted", "b": "skipped"}


def test_force_reaches_the_op_context(write_pipeline, calls, monkeypatch):
    seen = []
    spec = REGISTRY["test.step"]

    def spy(ctx, params):
        seen.append(ctx.force)
        return spec.func(ctx, params)

    monkeypatch.setitem(REGISTRY, "test.step", OpSpec(spec.name, spec.params, spy, spec.doc))
    run_pipeline(load_pipeline(write_pipeline(CHAIN)), force=True, table=False)
    assert seen == [True] * 4
