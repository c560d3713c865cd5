"""`load.database`: pick the target from its URL and load the Parquet tables into it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from deepcvr.errors import ConfigError
from deepcvr.load.parquet_input import inspect_parquet
from deepcvr.secrets import mask_url

if TYPE_CHECKING:
    from deepcvr.load.ops import LoadParams
    from deepcvr.pipeline.ops import OpContext

SUPPORTED = "duckdb:///PATH"


def load(
    parquet_dir: Path, target: str, replace: bool = False, enforce_keys_max_rows: int = 200_000_000
) -> dict[str, Any]:
    try:
        url = make_url(target)
    except ArgumentError:
        raise ConfigError(
            f"target {mask_url(target)!r} is not a database URL; use {SUPPORTED}"
        ) from None
    backend = url.get_backend_name()
    if backend == "duckdb":
        from deepcvr.load.duckdb_target import load_duckdb

        if not url.database:
            raise ConfigError(f"target {target!r} names no database file; use {SUPPORTED}")
        inp = inspect_parquet(parquet_dir)
        return load_duckdb(inp, Path(url.database), replace, enforce_keys_max_rows)
    raise ConfigError(
        f"target {mask_url(target)!r}: unsupported database {backend!r}; use {SUPPORTED}"
    )


def run_load(ctx: OpContext, params: LoadParams) -> dict[str, Any]:
    parquet_dir = Path(params.input) if params.input else ctx.workspace / "parquet"
    summary = load(parquet_dir, params.target, params.replace, params.enforce_keys_max_rows)
    if ctx.store is not None:
        for check in summary.get("checks", []):
            ctx.store.record(ctx.run_id, ctx.task, "load_check", check["name"], check)
    return summary
