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
from deepcvr.pipeline.ops import OpContext, OpParams, op, registry
from deepcvr.secrets import mask_url


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


@op("sample.stratified", SampleParams, inputs=lambda ctx, params: _inputs(ctx, params))
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
    out_dir = _out_dir(ctx, params)
    if params.source:
        if params.input not in (None, "-", params.source):
            raise ConfigError("give RAW_DIR or --source, not both (use - as RAW_DIR)")
        from deepcvr.sample.dbsource import sample_database

        report = sample_database(params.source, out_dir, opts, params.split, ctx.force)
    else:
        if params.input == "-":
            raise ConfigError("RAW_DIR is '-': give --source URL to sample a database")
        report = sample_raw(_raw_dir(ctx, params), out_dir, opts, params.split, ctx.force)
    if params.dry_run:
        return _summary(report)
    target = params.load_target
    if target and not (report.get("skipped") and _exists(target)):
        report["load"] = _load(ctx, out_dir, params)
    if not report.get("skipped"):
        _record(ctx, params, out_dir, report)
    return _summary(report)


# The op declares its inputs but not its outputs, so the runner never skips it: a dry run must
# always print, and the op skips itself (returning the earlier report) when OUT_DIR was made
# from the same inputs and settings. It records its output assets and lineage itself.
def _inputs(ctx: OpContext, params: SampleParams) -> list[str]:
    return [params.source] if params.source else [str(_raw_dir(ctx, params).resolve())]


def _raw_dir(ctx: OpContext, params: SampleParams) -> Path:
    return ctx.path(params.input) if params.input else ctx.workspace / "raw"


def _out_dir(ctx: OpContext, params: SampleParams) -> Path:
    return ctx.path(params.output) if params.output else ctx.workspace / "sample" / "raw"


def _exists(uri: str) -> bool:
    from deepcvr.pipeline.fingerprint import local_path

    path = local_path(uri)
    return path is not None and path.exists()


def _record(ctx: OpContext, params: SampleParams, out_dir: Path, report: dict[str, Any]) -> None:
    if ctx.store is None:
        return
    from deepcvr.pipeline.fingerprint import asset_fingerprint

    outputs = [str(out_dir.resolve())] + ([params.load_target] if params.load_target else [])
    rows = sum(s["sample"] for s in report["splits"].values())
    for uri in outputs:
        fp = asset_fingerprint(uri)
        ctx.store.add_asset(
            uri,
            "sample_raw" if uri == outputs[0] else "database",
            bytes=fp["bytes"] if fp else None,
            checksum=fp["digest"] if fp else None,
            rows=rows,
            run_id=ctx.run_id,
            task=ctx.task,
        )
    ctx.store.add_lineage(ctx.run_id, ctx.task, _inputs(ctx, params), outputs)


def _load(ctx: OpContext, out_dir: Path, params: SampleParams) -> dict[str, Any]:
    """Run the ordinary transform and load ops on the written sample (Parquet in a temp dir)."""
    ops = registry()
    ctx.workspace.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=TMP_MARK, dir=ctx.workspace) as tmp:
        parquet = str(Path(tmp) / "parquet")
        transform = {"input": str(out_dir), "output": parquet, "split": params.split}
        transform["workers"] = params.workers
        target = params.load_target or ""
        load = {"input": parquet, "target": target}
        results = []
        for name, values in (("transform.aliccp", transform), ("load.database", load)):
            spec = ops[name]
            given = {k: v for k, v in values.items() if v is not None}
            results.append(spec.func(ctx, spec.params.model_validate(given)) or {})
    seconds = results[0].get("seconds")
    return {"target": mask_url(target), "transform_seconds": seconds, **results[1]}


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """The op result: totals first (the run table shows them), then the report without the
    input fingerprint (kept in OUT_DIR's report)."""
    splits = report.get("splits", {}).values()
    head = {"skipped": report["skipped"]} if "skipped" in report else {}
    head["population"] = sum(s["population"] for s in splits)
    head["sample"] = sum(s["sample"] for s in splits)
    return {**head, **{k: v for k, v in report.items() if k != "fingerprint"}}
