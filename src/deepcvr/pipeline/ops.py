"""The operator registry: every pipeline op is a named function with a typed params model.

The same params model validates a task's `with:` block in YAML and backs the matching CLI
command, so file config and flags cannot drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict


class OpParams(BaseModel):
    """Base of every op's params: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class OpContext:
    """What a running op may use besides its params."""

    workspace: Path
    run_id: str
    task: str
    force: bool = False
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("deepcvr"))
    store: Any = None  # deepcvr.metadata.MetadataStore; Any to avoid an import cycle

    def path(self, value: str | Path) -> Path:
        """Resolve a path param: absolute stays, relative is taken from the current directory."""
        return Path(value).expanduser()


OpFunc = Callable[[OpContext, Any], dict[str, Any] | None]
# What a task reads and writes, as paths or URIs; used for fingerprints, skipping and lineage.
AssetFunc = Callable[[OpContext, Any], list[str]]


@dataclass(frozen=True)
class OpSpec:
    name: str
    params: type[OpParams]
    func: OpFunc
    doc: str
    inputs: AssetFunc | None = None
    outputs: AssetFunc | None = None  # None: the task cannot be skipped, it always runs


REGISTRY: dict[str, OpSpec] = {}


def op(
    name: str,
    params: type[OpParams],
    inputs: AssetFunc | None = None,
    outputs: AssetFunc | None = None,
) -> Callable[[OpFunc], OpFunc]:
    """Register `func` as pipeline op `name`; it returns a JSON-able summary dict (or None).

    `inputs`/`outputs` name what a task reads and writes; with `outputs` declared, a task whose
    params, inputs and outputs are unchanged since its last success is skipped."""

    def decorate(func: OpFunc) -> OpFunc:
        doc = (func.__doc__ or "").strip().splitlines()[0]
        REGISTRY[name] = OpSpec(name, params, func, doc, inputs, outputs)
        return func

    return decorate


BUILTIN_OP_MODULES = (
    "deepcvr.synth_op",
    "deepcvr.extract.ops",
    "deepcvr.transform.ops",
    "deepcvr.load.ops",
    "deepcvr.quality.ops",
    "deepcvr.sample.ops",
)


def registry() -> dict[str, OpSpec]:
    """All registered ops, importing the built-in op modules on first use."""
    import importlib

    for module in BUILTIN_OP_MODULES:
        importlib.import_module(module)
    return REGISTRY
