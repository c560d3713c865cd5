"""Pipeline ops of the quality stage: summary, checks after load, and the profile report."""

from __future__ import annotations

from pathlib import Path
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


class ChecksParams(OpParams):
    target: str | None = Field(
        None, description="database URL (default: the target of the latest load task)"
    )
    parquet: str | None = Field(
        None,
        description="transform output with _manifest.json files, for the accounting "
        "(default: the load task's input, else WORKSPACE/parquet; else the metadata store)",
    )
    raw: str | None = Field(
        None, description="raw CSV directory to recount (0,1) lines in (default: WORKSPACE/raw)"
    )
    ctr_min: float = Field(0.001, ge=0, le=1, description="lowest plausible CTR")
    ctr_max: float = Field(0.2, ge=0, le=1, description="highest plausible CTR")
    cvr_min: float = Field(0.0005, ge=0, le=1, description="lowest plausible CVR (per click)")
    cvr_max: float = Field(0.2, ge=0, le=1, description="highest plausible CVR (per click)")
    min_impressions: int = Field(
        1000, ge=0, description="below this many impressions a CTR out of bounds only warns"
    )
    min_clicks: int = Field(
        1000, ge=0, description="below this many clicks a CVR out of bounds only warns"
    )


def _inputs(
    ctx: OpContext, target: str | None, parquet: str | None
) -> tuple[str, Path, list[dict[str, Any]], Path]:
    """Target URL, its workspace, the accounting rows (manifests, else metadata records) and
    the Parquet directory it was loaded from."""
    from deepcvr.quality.sources import (
        accounting_from_store,
        accounting_rows,
        read_manifests,
        resolve_target,
    )

    url, workspace, load_input = resolve_target(ctx.workspace, target)
    directory = ctx.path(parquet) if parquet else load_input or workspace / "parquet"
    manifests = read_manifests(directory)
    records = {} if manifests else accounting_from_store(ctx.store)
    return url, workspace, accounting_rows(manifests, records), directory


@op("quality.checks", ChecksParams)
def checks_op(ctx: OpContext, params: ChecksParams) -> dict[str, Any]:
    """Check a loaded database: keys, CTR/CVR, (0,1) labels, feature counts, accounting."""
    from deepcvr.errors import DataError
    from deepcvr.logsetup import make_console
    from deepcvr.quality.checks import Bounds, check_dict, print_checks, run_all
    from deepcvr.quality.sources import connect

    url, workspace, accounting, directory = _inputs(ctx, params.target, params.parquet)
    raw = ctx.path(params.raw) if params.raw else workspace / "raw"
    bounds = Bounds(
        params.ctr_min,
        params.ctr_max,
        params.cvr_min,
        params.cvr_max,
        params.min_impressions,
        params.min_clicks,
    )
    con = connect(url, directory)
    try:
        checks, table = run_all(con, accounting, bounds, raw)
    finally:
        con.close()
    if ctx.store is not None:
        for check in checks:
            ctx.store.record(ctx.run_id, ctx.task, "quality_check", check.name, check_dict(check))
    print_checks(checks, table, make_console())
    failed = [c for c in checks if c.status == "FAIL"]
    if failed:
        listed = "; ".join(f"{c.name} ({c.detail})" for c in failed[:5])
        more = f"; and {len(failed) - 5} more" if len(failed) > 5 else ""
        raise DataError(f"{len(failed)} quality check(s) failed: {listed}{more}")
    return {
        "target": url,
        "checks": len(checks),
        "warnings": sum(c.status == "warn" for c in checks),
        "results": [check_dict(c) for c in checks],
        "accounting": table,
    }


class ReportParams(OpParams):
    target: str | None = Field(
        None, description="database URL (default: the target of the latest load task)"
    )
    output: str | None = Field(
        None, description="HTML file to write (default: WORKSPACE/report.html)"
    )
    parquet: str | None = Field(
        None,
        description="transform output with _manifest.json files, for the accounting "
        "(default: the load task's input, else WORKSPACE/parquet; else the metadata store)",
    )
    examples: int = Field(3, ge=0, le=100, description="reject examples shown per reason")


@op("quality.report", ReportParams)
def report_op(ctx: OpContext, params: ReportParams) -> dict[str, Any]:
    """Write a self-contained HTML profile of a loaded database (plots, accounting, rejects)."""
    from deepcvr.quality.report import write_report

    url, workspace, accounting, directory = _inputs(ctx, params.target, params.parquet)
    output = ctx.path(params.output) if params.output else workspace / "report.html"
    result = write_report(url, output, accounting, params.examples, directory)
    if ctx.store is not None:
        ctx.store.add_asset(
            str(output),
            "report",
            bytes=result["bytes"],
            checksum=result["sha256"],
            run_id=ctx.run_id,
            task=ctx.task,
        )
    ctx.log.info("report written to %s", output)
    return result
