"""Shared fixtures: a tiny configurable test op and a pipeline-file writer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import Field

from deepcvr.errors import DataError
from deepcvr.pipeline.ops import OpContext, OpParams, op

CALLS: list[str] = []  # task names, in the order the test op ran them
BARRIERS: dict[str, threading.Barrier] = {}


class StepParams(OpParams):
    tag: str = Field("", description="free text, echoed in the result")
    count: int = Field(1, ge=1, description="a number, echoed in the result")
    target: str | None = Field(None, description="a URL, echoed in the result")
    barrier: str | None = Field(None, description="wait on BARRIERS[barrier] first")
    sleep: float = Field(0.0, ge=0, description="seconds to sleep first")
    fail: Literal["none", "user", "bug", "interrupt"] = Field("none", description="how to fail")
    message: str = Field("boom", description="the error message")
    splits: list[Literal["train", "test"]] | None = Field(None, description="some splits")
    flag: bool = Field(False, description="a boolean flag")


@op("test.step", StepParams)
def step_op(ctx: OpContext, params: StepParams) -> dict[str, Any]:
    """Record the call, optionally wait or fail; return the params."""
    if params.barrier:
        BARRIERS[params.barrier].wait(timeout=5)
    time.sleep(params.sleep)
    CALLS.append(ctx.task)
    if params.fail == "user":
        raise DataError(params.message)
    if params.fail == "bug":
        raise ValueError(params.message)
    if params.fail == "interrupt":
        raise KeyboardInterrupt
    return {"tag": params.tag, "count": params.count, "target": params.target, "ws": ctx.workspace}


@pytest.fixture
def calls() -> list[str]:
    CALLS.clear()
    return CALLS


@pytest.fixture
def write_pipeline(tmp_path: Path) -> Callable[[str], Path]:
    """Write YAML text to `tmp_path/pipeline.yaml`; `{ws}` is replaced by a workspace dir."""

    def write(text: str, name: str = "pipeline.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text.replace("{ws}", str(tmp_path / "ws")), encoding="utf-8")
        return path

    return write
