"""Skip a task whose op, params, inputs and outputs are unchanged since its last success.

A task reruns when it never succeeded, when its fingerprint (op, resolved params, input
fingerprints, deepcvr version) changed, when an output is missing or was changed since, when a
task upstream ran in this run, or with --force / --from. Success is recorded only after the op
returned, i.e. after its outputs were renamed into place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deepcvr.fsutil import TMP_MARK, remove_path
from deepcvr.metadata import MetadataStore
from deepcvr.pipeline.fingerprint import asset_fingerprint, local_path, task_fingerprint
from deepcvr.pipeline.ops import OpContext, OpParams, OpSpec


@dataclass
class Decision:
    run: bool
    reason: str
    fingerprint: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)  # uri -> fingerprint when decided


def _params(params: OpParams) -> dict[str, Any]:
    return params.model_dump(mode="json")


def decide(
    store: MetadataStore,
    pipeline: str,
    task: str,
    spec: OpSpec,
    ctx: OpContext,
    params: OpParams,
    forced: bool,
    upstream_ran: list[str],
) -> Decision:
    inputs = {
        uri: asset_fingerprint(uri) for uri in (spec.inputs(ctx, params) if spec.inputs else [])
    }
    fingerprint = task_fingerprint(spec.name, _params(params), inputs)
    if forced:
        return Decision(True, "forced", fingerprint, inputs)
    if spec.outputs is None:
        return Decision(True, "always runs (no declared outputs)", fingerprint, inputs)
    if upstream_ran and spec.inputs is None:
        # Without declared inputs, what upstream rewrote is unknown: rerun to be safe. With
        # them, the input fingerprints above already tell whether upstream changed anything.
        return Decision(True, f"upstream {', '.join(upstream_ran)} ran", fingerprint, inputs)
    state = store.task_state(pipeline, task)
    if state is None:
        return Decision(True, "no earlier success", fingerprint, inputs)
    if state["fingerprint"] != fingerprint:
        return Decision(True, "op, params or inputs changed", fingerprint, inputs)
    for uri, recorded in state["outputs"].items():
        now = asset_fingerprint(uri)
        if now is None:
            return Decision(True, f"output {uri} is missing", fingerprint, inputs)
        if now != recorded:
            return Decision(True, f"output {uri} changed since", fingerprint, inputs)
    return Decision(
        False, f"up to date (same inputs and params as run {state['run_id']})", fingerprint, inputs
    )


def record_success(
    store: MetadataStore,
    pipeline: str,
    spec: OpSpec,
    ctx: OpContext,
    params: OpParams,
    decision: Decision,
    result: Any,
) -> None:
    """Register outputs as assets with lineage, and remember the task's state for next time."""
    outputs = {
        uri: asset_fingerprint(uri) for uri in (spec.outputs(ctx, params) if spec.outputs else [])
    }
    rows = result.get("rows") if isinstance(result, dict) else None
    for uri, fp in outputs.items():
        store.add_asset(
            uri,
            fp["kind"] if fp else "table",
            bytes=fp["bytes"] if fp else None,
            checksum=fp["digest"] if fp else None,
            rows=rows if isinstance(rows, int) else None,
            run_id=ctx.run_id,
            task=ctx.task,
        )
    # Finer assets the op reports itself: each Parquet dataset or table, with rows and schema.
    for asset in result.get("assets", []) if isinstance(result, dict) else []:
        store.add_asset(
            asset["uri"],
            asset["kind"],
            bytes=asset.get("bytes"),
            rows=asset.get("rows"),
            run_id=ctx.run_id,
            task=ctx.task,
            schema=asset.get("schema"),
        )
    store.add_lineage(ctx.run_id, ctx.task, list(decision.inputs), list(outputs))
    if (
        spec.outputs is not None
        and decision.fingerprint is not None
        and all(fp is not None for fp in outputs.values())
    ):
        store.save_task_state(
            pipeline, ctx.task, spec.name, decision.fingerprint, outputs, ctx.run_id
        )


def clean_leftovers(spec: OpSpec, ctx: OpContext, params: OpParams) -> int:
    """Remove temp files a killed run left beside this task's outputs (`.tmp-NAME.*`); safe
    because the workspace lock guarantees no other run is writing them."""
    removed = 0
    for uri in spec.outputs(ctx, params) if spec.outputs else []:
        path = local_path(uri)
        if path is None or not path.parent.is_dir():
            continue
        for leftover in path.parent.glob(f"{TMP_MARK}{path.name}.*"):
            remove_path(leftover)
            removed += 1
    return removed
