"""Pipeline op `load.database`: 3NF Parquet -> a keyed, verified target database."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from deepcvr.pipeline.ops import OpContext, OpParams, op

# DuckDB's own default is 80 % of the machine's memory, which a load fills with its buffer pool
# (3.4 GB at 16 M impressions, growing with the input). Held to 1 GB, the 16 M load kept a
# 1.25 GB peak in the same time (33-34 s against 34.8 s), with 7-9 s of system time against
# 12 s: fewer fresh pages.
DUCKDB_MEMORY_MB = 1024


class LoadParams(OpParams):
    input: str | None = Field(None, description="Parquet directory (default: WORKSPACE/parquet)")
    target: str = Field(
        ...,
        description="database URL: duckdb:///PATH, mysql+pymysql://USER@HOST[:PORT]/DB or "
        "postgresql+psycopg://USER@HOST[:PORT]/DB (password via ${env:NAME})",
    )
    replace: bool = Field(False, description="replace tables that exist with another shape")
    enforce_keys_max_rows: int | None = Field(
        None,
        ge=0,
        description="enforce PRIMARY/FOREIGN KEY constraints on tables up to this many rows; "
        "larger tables get keys declared in the catalogue and verified by queries (default: "
        "1,000,000 on DuckDB, whose foreign keys are checked row by row as rows arrive; "
        "10,000,000 on MySQL/MariaDB and PostgreSQL)",
    )
    memory_mb: int = Field(
        DUCKDB_MEMORY_MB,
        ge=64,
        description="DuckDB: memory the load may hold, in MB; beyond it DuckDB writes "
        "intermediate data to a temp directory beside the target, so memory does not grow with "
        "the input",
    )
    allow_slow_insert: bool = Field(
        False,
        description="MySQL/MariaDB: if the server refuses LOAD DATA LOCAL INFILE "
        "(local_infile=0), load with multi-row INSERT batches (much slower) instead of failing",
    )


def _input(ctx: OpContext, params: LoadParams) -> list[str]:
    return [str(ctx.path(params.input or ctx.workspace / "parquet").resolve())]


@op(
    "load.database",
    LoadParams,
    inputs=_input,
    outputs=lambda ctx, params: [params.target],
)
def load_op(ctx: OpContext, params: LoadParams) -> dict[str, Any]:
    """Bulk-load the 3NF Parquet tables into the target database, then key and verify them."""
    from deepcvr.load.database import run_load

    return run_load(ctx, params)
