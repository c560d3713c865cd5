"""The pipeline YAML: one pydantic model, `--set` overrides, `${...}` interpolation, and
one-line errors that name the file and the YAML path (exit code 2, nothing run).
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deepcvr.errors import ConfigError
from deepcvr.pipeline import dag
from deepcvr.pipeline.interpolate import interpolate_document
from deepcvr.pipeline.ops import BUILTIN_OP_MODULES, REGISTRY, OpParams, OpSpec
from deepcvr.pipeline.yamlio import Loc, apply_override, did_you_mean, read_yaml, yaml_path
from deepcvr.secrets import mask_secrets, mask_url

log = logging.getLogger("deepcvr")


class TaskConfig(BaseModel):
    """One task: an op, the tasks it needs, and the op's params (`with`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    op: str = Field(description="registered op name, e.g. transform.aliccp")
    needs: list[str] = Field(default_factory=list, description="tasks that must succeed first")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with", description="op params")


class PipelineConfig(BaseModel):
    """A pipeline file: named tasks forming a DAG over a workspace directory."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="pipeline name, recorded with every run")
    description: str | None = Field(None, description="free text")
    workspace: str = Field("data", description="directory for outputs and the metadata store")
    params: dict[str, Any] = Field(default_factory=dict, description="values for ${params.X}")
    max_parallel: int = Field(2, ge=1, description="tasks run at the same time, at most")
    tasks: dict[str, TaskConfig] = Field(min_length=1, description="task name -> task")


@dataclass(frozen=True)
class Pipeline:
    """A validated pipeline: config with interpolated values, typed op params, masked view."""

    config: PipelineConfig
    path: Path | None
    task_params: dict[str, OpParams]
    masked: dict[str, Any]  # {workspace, params, tasks: {name: {op, needs, with}}}; loggable

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def workspace(self) -> Path:
        return Path(self.config.workspace).expanduser()

    @property
    def graph(self) -> dict[str, list[str]]:
        return {name: list(task.needs) for name, task in self.config.tasks.items()}

    def order(self) -> list[str]:
        return dag.topological_order(self.graph)


def known_ops() -> dict[str, OpSpec]:
    """The op registry; a built-in op module that does not exist yet is left out, not fatal."""
    for module in BUILTIN_OP_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:  # a real missing dependency inside the module
                raise
            log.debug("op module %s not available", module)
    return REGISTRY


def load_pipeline(path: Path, overrides: Sequence[str] = ()) -> Pipeline:
    """Read, override, interpolate and validate a pipeline file; raise ConfigError if invalid."""
    path = Path(path)
    src = str(path)
    raw = read_yaml(path)
    for item in overrides:
        apply_override(raw, item, src)
    return build_pipeline(raw, src, path)


def build_pipeline(raw: dict[str, Any], src: str, path: Path | None = None) -> Pipeline:
    """Validate an already-parsed pipeline mapping; `src` names it in error messages."""
    for task in (raw.get("tasks") or {}).values() if isinstance(raw.get("tasks"), dict) else ():
        if isinstance(task, dict):  # `with:` / `needs:` left empty in YAML mean "none"
            for key, empty in (("with", {}), ("needs", [])):
                if key in task and task[key] is None:
                    task[key] = empty
    if raw.get("params", {}) is None:
        raw["params"] = {}
    real, masked = interpolate_document(raw, src)
    try:
        config = PipelineConfig.model_validate(real)
    except ValidationError as e:
        raise ConfigError(_describe(e, src, PipelineConfig, masked)) from None
    ops = known_ops()
    for name, task in config.tasks.items():
        if task.op not in ops:
            hint = did_you_mean(task.op, ops)
            known = ", ".join(sorted(ops))
            raise ConfigError(
                f"{src}: tasks.{name}.op: unknown op '{task.op}'{hint} (known: {known})"
            )
        for need in task.needs:
            if need not in config.tasks:
                hint = did_you_mean(need, config.tasks)
                raise ConfigError(f"{src}: tasks.{name}.needs: unknown task '{need}'{hint}")
    cycle = dag.find_cycle({n: t.needs for n, t in config.tasks.items()})
    if cycle:
        raise ConfigError(f"{src}: tasks: dependency cycle {' -> '.join(cycle)}")
    task_params: dict[str, OpParams] = {}
    for name, task in config.tasks.items():
        model = ops[task.op].params
        try:
            task_params[name] = model.model_validate(task.with_)
        except ValidationError as e:
            raise ConfigError(_describe(e, src, model, masked, ("tasks", name, "with"))) from None
    return Pipeline(config, path, task_params, mask_secrets(masked))


def single_task_pipeline(name: str, op_name: str, params: OpParams, workspace: str) -> Pipeline:
    """A one-task pipeline for a CLI command, so it is run and recorded like any other run."""
    task = TaskConfig(op=op_name, with_=params.model_dump(mode="json", exclude_unset=True))
    config = PipelineConfig(name=f"deepcvr {name}", workspace=workspace, tasks={name: task})
    masked = {
        "workspace": workspace,
        "params": {},
        "tasks": {name: {"op": op_name, "needs": [], "with": params.model_dump(mode="json")}},
    }
    return Pipeline(config, None, {name: params}, mask_secrets(masked))


def pipeline_json_schema() -> dict[str, Any]:
    """JSON Schema of the pipeline YAML, each op's `with` schema attached for completion."""
    schema = PipelineConfig.model_json_schema(by_alias=True)
    defs = schema.setdefault("$defs", {})
    task = defs["TaskConfig"]
    ops = known_ops()
    task["properties"]["op"]["enum"] = sorted(ops)
    branches = []
    for name, spec in sorted(ops.items()):
        sub = spec.params.model_json_schema(by_alias=True)
        for key, value in sub.pop("$defs", {}).items():
            defs.setdefault(key, value)
        sub["description"] = spec.doc
        defs[f"with.{name}"] = sub
        branches.append(
            {
                "if": {"properties": {"op": {"const": name}}, "required": ["op"]},
                "then": {"properties": {"with": {"$ref": f"#/$defs/with.{name}"}}},
            }
        )
    task["allOf"] = branches
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "deepcvr pipeline"
    return schema


# --- error messages ---------------------------------------------------------------------------


def _describe(
    error: ValidationError, src: str, model: type[BaseModel], masked: Any, prefix: Loc = ()
) -> str:
    """One line for all of a pydantic error's entries, each naming its YAML path."""
    parts = []
    for err in error.errors():
        loc: Loc = tuple(p for p in err["loc"] if p not in ("[key]",))
        full = (*prefix, *loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            hint = did_you_mean(str(loc[-1]), allowed)
            msg = f"unknown key (allowed: {', '.join(allowed)}){hint}"
        elif kind == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"][:1].lower() + err["msg"][1:]
            shown = _lookup(masked, full)
            if shown is not _MISSING and not isinstance(shown, dict | list):
                msg += f" (got {mask_url(shown) if isinstance(shown, str) else shown!r})"
        parts.append(f"{yaml_path(full) or 'top level'}: {msg}")
    return f"{src}: " + "; ".join(parts)


_MISSING = object()


def _lookup(tree: Any, loc: Loc) -> Any:
    for part in loc:
        in_list = isinstance(tree, list) and isinstance(part, int) and part < len(tree)
        if in_list or (isinstance(tree, dict) and part in tree):
            tree = tree[part]
        else:
            return _MISSING
    return tree


def _allowed_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    """Field names (YAML spelling) of the model that validates the mapping at `loc`."""
    current: type[BaseModel] | None = model
    i = 0
    while current is not None and i < len(loc):
        field = _field(current, loc[i])
        ann = field.annotation if field else None
        args = get_args(ann)
        if inspect.isclass(ann) and issubclass(ann, BaseModel):
            current, i = ann, i + 1
        elif get_origin(ann) is dict and args and inspect.isclass(args[1]):
            current, i = (args[1] if issubclass(args[1], BaseModel) else None), i + 2
        else:
            current = None
    if current is None:
        return []
    return [f.alias or name for name, f in current.model_fields.items()]


def _field(model: type[BaseModel], key: str | int) -> Any:
    for name, f in model.model_fields.items():
        if key in (name, f.alias):
            return f
    return None
