"""Typer commands built from op params models: one field, one option (or argument).

A pydantic field becomes a kebab-case option with the field's description as help, its
default, Literal choices, a repeatable option for lists and KEY=VALUE pairs for dicts, and a
flag for booleans; so adding a field to a params model adds the flag.
"""

from __future__ import annotations

import enum
import inspect
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NoReturn, Optional, get_args, get_origin

import typer
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from deepcvr.errors import ConfigError
from deepcvr.pipeline.config import known_ops, single_task_pipeline
from deepcvr.pipeline.ops import OpParams
from deepcvr.pipeline.runner import run_pipeline
from deepcvr.pipeline.yamlio import one_line
from deepcvr.secrets import mask_text

log = logging.getLogger("deepcvr")


def fail(message: str, code: int) -> NoReturn:
    """Print `error: message` as one masked line on stderr and exit with `code`."""
    typer.echo(f"error: {one_line(mask_text(message))}", err=True)
    raise typer.Exit(code)


WORKSPACE_OPTION = typer.Option(
    "data",
    "--workspace",
    envvar="DEEPCVR_WORKSPACE",
    help="Workspace directory (default paths, metadata store).",
)
_RESERVED = ("workspace", "force")


def add_op_command(
    target: typer.Typer, name: str, op_name: str, arguments: Mapping[str, str] | None = None
) -> None:
    """Add command `name` running op `op_name`; every params field becomes an option
    (kebab-case), or a positional argument when listed in `arguments` (field -> METAVAR).

    The command validates with the model, then runs the op as a recorded one-task run and
    prints its result as JSON on stdout.
    """
    arguments = arguments or {}
    ops = known_ops()
    if op_name not in ops:  # an op module not written yet must not break the whole CLI
        log.debug("command %s: op %s is not registered", name, op_name)
        return
    spec = ops[op_name]
    model = spec.params
    fields = model.model_fields
    order = [f for f in arguments if f in fields] + [f for f in fields if f not in arguments]
    params = [
        inspect.Parameter(f, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=info)
        for f in order
        for ann, info in [_cli_param(model.__name__, f, fields[f], arguments.get(f))]
    ]
    for f in _RESERVED:
        if f in fields:
            raise TypeError(f"{model.__name__}.{f} clashes with the --{f} option")
    params.append(
        inspect.Parameter(
            "workspace", inspect.Parameter.KEYWORD_ONLY, annotation=str, default=WORKSPACE_OPTION
        )
    )
    params.append(
        inspect.Parameter(
            "force",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=bool,
            default=typer.Option(
                False, "--force", help="Redo work even if outputs are up to date."
            ),
        )
    )
    shown = {f: arguments.get(f) or f"--{f.replace('_', '-')}" for f in fields}

    def command(**kwargs: Any) -> None:
        workspace, force = kwargs.pop("workspace"), kwargs.pop("force")
        values = {}
        for f, value in kwargs.items():
            if value is None or (value == [] and not fields[f].is_required()):
                continue  # not given: the model's default applies
            if isinstance(value, list):
                value = [v.value if isinstance(v, enum.Enum) else v for v in value]
            values[f] = _pairs(value, shown[f]) if _is_dict(fields[f]) else value
        params_obj = _validate(model, values, shown)
        pipeline = single_task_pipeline(name, op_name, params_obj, workspace)
        result = run_pipeline(pipeline, force=force, table=False)
        outcome = result.tasks[name]
        if outcome.status == "skipped":  # up to date: nothing to do is a success
            typer.echo(json.dumps({"skipped": outcome.note}, indent=2))
            return
        if outcome.status != "succeeded":
            fail(outcome.error or outcome.status, outcome.exit_code or 1)
        typer.echo(json.dumps(outcome.result, indent=2, default=str))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = name.replace("-", "_")
    doc = (spec.func.__doc__ or spec.doc).strip()
    command.__doc__ = (
        f"{doc}\n\nSame as pipeline op {op_name}: each option is a key of its `with:`."
    )
    target.command(name)(command)


def _cli_param(owner: str, name: str, field: FieldInfo, metavar: str | None) -> tuple[Any, Any]:
    """(annotation, typer.Option/Argument) for one pydantic field."""
    ann = field.annotation
    optional = type(None) in get_args(ann)
    inner = next((a for a in get_args(ann) if a is not type(None)), ann) if optional else ann
    required = field.is_required()
    default = None if required else field.get_default(call_default_factory=True)
    kw: dict[str, Any] = {"help": field.description or ""}
    origin, args = get_origin(inner), get_args(inner)
    if origin is list:
        item = args[0] if args else str
        if get_origin(item) is Literal:  # Typer takes Literal, but not inside list[]
            item = enum.Enum(f"{owner}_{name}", {str(a): a for a in get_args(item)})
        inner, default = list[item], None  # type: ignore[valid-type]
        kw["help"] += " (repeatable)"
    elif origin is dict:
        inner, default = list[str], None
        kw["metavar"], kw["help"] = "KEY=VALUE", kw["help"] + " (repeatable)"
    elif origin is not Literal and inner not in (str, int, float, bool, Path):
        raise TypeError(f"{owner}.{name}: {ann} has no CLI mapping; add one to _cli_param")
    if metavar is not None:  # positional: required on the command line, so no default
        kw["help"] = re.sub(r"\s*\(default:[^)]*\)", "", kw["help"])
        return inner, typer.Argument(..., metavar=metavar, show_default=False, **kw)
    flag = f"--{name.replace('_', '-')}"
    decls = [f"{flag}/--no-{name.replace('_', '-')}" if inner is bool and default else flag]
    annotation = inner if required or (inner is bool) else Optional[inner]  # noqa: UP045
    return annotation, typer.Option(... if required else default, *decls, **kw)


def _is_dict(field: FieldInfo) -> bool:
    ann = field.annotation
    return get_origin(ann) is dict or any(get_origin(a) is dict for a in get_args(ann))


def _pairs(items: list[str], shown: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{shown} {item}: expected KEY=VALUE")
        out[key] = value
    return out


def _validate(model: type[OpParams], values: dict[str, Any], shown: dict[str, str]) -> OpParams:
    try:
        return model.model_validate(values)
    except ValidationError as e:
        parts = []
        for err in e.errors():
            where = shown.get(str(err["loc"][0]), str(err["loc"][0])) if err["loc"] else "input"
            got = f" (got {err['input']!r})" if err["type"] != "missing" else ""
            parts.append(f"{where}: {err['msg'][:1].lower()}{err['msg'][1:]}{got}")
        raise ConfigError("; ".join(parts)) from None
