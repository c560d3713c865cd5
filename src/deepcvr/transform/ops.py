"""Pipeline op `transform.aliccp`: raw Ali-CCP CSVs -> the six 3NF tables as Parquet."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field

from deepcvr.pipeline.ops import OpContext, OpParams, op


class TransformParams(OpParams):
    input: str | None = Field(None, description="raw directory (default: WORKSPACE/raw)")
    output: str | None = Field(None, description="Parquet directory (default: WORKSPACE/parquet)")
    split: list[Literal["train", "test"]] | None = Field(
        None, description="splits to transform (default: every split present)"
    )
    engine: Literal["local", "spark"] = Field("local", description="transform engine")
    workers: int | None = Field(None, ge=1, description="parallel workers (default: all cores)")
    chunk_mb: float = Field(8.0, gt=0, description="bytes of raw CSV per chunk, in MB")
    max_reject_ratio: float = Field(
        0.001, ge=0, le=1, description="fail when rejected lines exceed this share of lines"
    )
    stage_raw: bool = Field(
        True,
        description="false: read the CSVs straight from the sample_{split}.tar.gz archives in "
        "the input directory (default WORKSPACE/external) without writing them to disk",
    )
    spark: dict[str, str] = Field(
        default_factory=dict, description="Spark settings, e.g. {spark.master: 'local[*]'}"
    )

    @property
    def chunk_bytes(self) -> int:
        return max(1, int(self.chunk_mb * 1_000_000))


def _where(ctx: OpContext, given: str | None, default: str) -> list[str]:
    if given and "://" in given:  # s3a://, hdfs://: a URI stays as it is
        return [given]
    return [str(ctx.path(given or ctx.workspace / default).resolve())]


def _input(ctx: OpContext, params: TransformParams) -> list[str]:
    return _where(ctx, params.input, "raw" if params.stage_raw else "external")


def _output(ctx: OpContext, params: TransformParams) -> list[str]:
    return _where(ctx, params.output, "parquet")


@op("transform.aliccp", TransformParams, inputs=_input, outputs=_output)
def transform_op(ctx: OpContext, params: TransformParams) -> dict[str, Any]:
    """Parse raw Ali-CCP CSVs into 3NF Parquet tables, with rejects and accounting."""
    runner = None
    if params.engine == "local":
        from deepcvr.transform.workers import ChunkRunner

        # Started before the engine is imported: the workers load the same modules meanwhile.
        runner = ChunkRunner(params.workers or os.cpu_count() or 1, params.chunk_bytes)
    try:
        from deepcvr.transform.engine import run_transform

        return run_transform(ctx, params, runner)
    finally:
        if runner is not None:
            runner.close(cancel=True)  # after a failure; a finished transform closed them
