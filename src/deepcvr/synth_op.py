"""Pipeline op `synth.generate`: write an Ali-CCP-shaped split from a seeded generator."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from deepcvr import aliccp
from deepcvr.pipeline.ops import OpContext, OpParams, op
from deepcvr.progress import progress


class GenerateParams(OpParams):
    out: str = Field(..., description="output directory")
    samples: int = Field(..., ge=1, description="number of impressions (skeleton lines)")
    split: Literal["train", "test"] = Field("train", description="split to generate")
    seed: int = Field(0, ge=0, description="random seed; the same arguments give the same bytes")
    archive: bool = Field(
        False, description="write sample_{split}.tar.gz instead of the two CSV files"
    )


def _outputs(ctx: OpContext, params: GenerateParams) -> list[str]:
    out = ctx.path(params.out).resolve()
    if params.archive:
        return [str(out / aliccp.archive_name(params.split))]
    return [
        str(out / aliccp.skeleton_name(params.split)),
        str(out / aliccp.common_name(params.split)),
    ]


@op("synth.generate", GenerateParams, inputs=lambda ctx, params: [], outputs=_outputs)
def generate_op(ctx: OpContext, params: GenerateParams) -> dict[str, Any]:
    """Generate synthetic Ali-CCP data (skeleton + common CSVs, or their tar.gz archive)."""
    from deepcvr.synth import generate  # numpy/polars: imported only when the op runs

    out = ctx.path(params.out)
    with progress(f"generate {params.split}", total=params.samples, unit="impressions") as advance:
        res = generate(
            out, params.samples, params.split, params.seed, params.archive, advance=advance
        )
    return {
        "split": res.split,
        "samples": res.samples,
        "common_rows": res.common_rows,
        "sample_structures": res.sample_structures,
        "common_structures": res.common_structures,
        "files": [str(p) for p in res.files],
    }
