"""Pipeline ops of the quality stage."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from deepcvr.pipeline.ops import OpContext, OpParams, op


class SummaryParams(OpParams):
    target: str = Field(..., description="database URL to summarize")


@op("quality.summary", SummaryParams)
def summary_op(ctx: OpContext, params: SummaryParams) -> dict[str, Any]:
    """Print row counts per table and CTR/CVR per split of a loaded database."""
    from deepcvr.quality.summary import print_summary, summarize

    summary = summarize(params.target)
    print_summary(summary)
    return summary
