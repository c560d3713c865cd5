"""Pipeline op `sample.stratified`: raw Ali-CCP files (or a loaded database) -> a stratified
sample in the raw layout, with a report; optionally loaded as tables."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from deepcvr.errors import ConfigError
from deepcvr.fsutil import TMP_MARK
from deepcvr.pipeline.ops import OpContext, OpParams, op


class SampleParams(OpParams):
    input: str | None = Field(
        None, description="raw directory (default: WORKSPACE/raw); '-' when --source is given"
    )
    output: str | None = Field(
        None, description="sample directory, raw layout (default: WORKSPACE/sample/raw)"
    )
    split: list[Literal["train", "test"]] | None = Field(
        None, description="splits to sample (default: every split present)"
    )
    margin: float | None = Field(
        None, gt=0, description="absolute margin of error e on p (default: --relative-margin 0.1)"
    )
    relative_margin: float | None = Field(
        None, gt=0, description="margin of error as a share of p: e = r * p"
    )
    confidence: float = Field(0.95, gt=0, lt=1, description="confidence level c")
    proportion: float | None = Field(
        None, gt=0, lt=1, description="p to size for (default: the population conversion rate)"
    )
    fraction: float | None = Field(
        None, gt=0, le=1, description="sample this share of impressions (overrides the calculator)"
    )
    size: int | None = Field(
        None, ge=1, description="sample this many impressions (overrides the calculator)"
    )
    allocation: Literal["proportional", "neyman", "explicit"] = Field(
        "proportional", description="how n is shared between strata"
    )
    stratum_fraction: dict[str, float] = Field(
        default_factory=dict,
        description="explicit allocation: CLICK,CONVERSION=FRACTION for each of the 4 labels",
    )
    min_per_stratum: int = Field(
        1, ge=0, description="at least this many impressions per stratum (capped at its size)"
    )
    by: list[str] | None = Field(
        None, description="extra stratification field, e.g. 301 (scenario)"
    )
    neyman_target: Literal["conversion", "click"] = Field(
        "conversion", description="label whose variance within --by groups drives Neyman"
    )
    seed: int = Field(0, ge=0, description="selection seed: same seed, same sample")
    dry_run: bool = Field(
        False, description="print N, p, z, n0, n and the allocation; write nothing"
    )
    source: str | None = Field(
        None, description="sample a loaded database instead, e.g. duckdb:///data/deepcvr.duckdb"
    )
    load_target: str | None = Field(
        None, description="also load the sample as tables into this database URL"
    )
    workers: int | None = Field(None, ge=1, description="parallel workers (default: all cores)")
    chunk_mb: float = Field(16.0, gt=0, description="bytes of raw CSV per chunk, in MB")


@op("sample.stratified", SampleParams)
def sample_op(ctx: OpContext, params: SampleParams) -> dict[str, Any]:
    """Draw a stratified sample (click x conversion strata) of a justified size, with a report."""
    from deepcvr.sample.sampler import SampleOptions, sample_raw

    opts = SampleOptions(
        seed=params.seed,
        by=list(params.by or []),
        allocation=params.allocation,
        stratum_fraction=dict(params.stratum_fraction),
        min_per_stratum=params.min_per_stratum,
        neyman_target=params.neyman_target,
        confidence=params.confidence,
        margin=params.margin,
        relative_margin=params.relative_margin,
        proportion=params.proportion,
        fraction=params.fraction,
        size=params.size,
        dry_run=params.dry_run,
        workers=params.workers or os.cpu_count() or 1,
        chunk_bytes=max(1, int(params.chunk_mb * 1_000_000)),
    )
    out_dir = ctx.path(params.output) if params.output else ctx.workspace / "sample" / "raw"
    if params.source:
        if params.input not in (None, "-", params.source):
            raise ConfigError("give RAW_DIR or --source, not both (use - as RAW_DIR)")
        from deepcvr.sample.dbsource import sample_database

        report = sample_database(params.source, out_dir, opts, params.split, ctx.force)
    else:
        if params.input == "-":
            raise ConfigError("RAW_DIR is '-': give --source URL to sample a database")
        raw_dir = ctx.path(params.input) if params.input else ctx.workspace / "raw"
        report = sample_raw(raw_dir, out_dir, opts, params.split, ctx.force)
    if params.load_target and not params.dry_run:
        report["load"] = _load(ctx, out_dir, params)
    return _summary(report)


def _load(ctx: OpContext, out_dir: Path, params: SampleParams) -> dict[str, Any]:
    """Transform the written sample with the ordinary transform, then load it."""
    from deepcvr.load.database import load
    from deepcvr.transform.engine import TransformOptions, transform

    ctx.workspace.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=TMP_MARK, dir=ctx.workspace) as tmp:
        parquet = Path(tmp) / "parquet"
        options = TransformOptions(workers=params.workers or os.cpu_count() or 1, force=True)
        done = transform(out_dir, parquet, params.split, options)
        loaded = load(parquet, params.load_target or "")
    return {"target": params.load_target, "transform_seconds": done["seconds"], **loaded}


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """The op result: totals first (the run table shows them), then the report without the
    input fingerprint (kept in OUT_DIR's report)."""
    splits = report.get("splits", {}).values()
    head = {
        "population": sum(s["population"] for s in splits),
        "sample": sum(s["sample"] for s in splits),
    }
    return {**head, **{k: v for k, v in report.items() if k != "fingerprint"}}
