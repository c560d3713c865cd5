"""The sample report: strata, weights, calculator and label estimates; JSON, Markdown and Rich.

Within a (click, conversion) stratum both labels are constant, so the weighted (N_h / n_h)
estimates of CTR and CVR equal the population values whenever every stratum is sampled; the
unweighted sample values are what a model trained on the sample sees, hence the intervals.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from deepcvr.logsetup import make_console
from deepcvr.sample.keys import Population
from deepcvr.sample.size import SizeResult, wilson
from deepcvr.sample.strata import AllocationResult

REPORT_JSON = "sample_report.json"
REPORT_MD = "sample_report.md"


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _estimate(
    pop_hits: int, pop_n: int, hits: int, n: int, w_hits: float, w_n: float, confidence: float
) -> dict[str, Any]:
    population = _ratio(pop_hits, pop_n)
    interval = wilson(hits, n, confidence)
    inside = None
    if interval is not None and population is not None:
        inside = interval[0] <= population <= interval[1]
    return {
        "population": population,
        "sample": _ratio(hits, n),
        "ci_low": interval[0] if interval else None,
        "ci_high": interval[1] if interval else None,
        "population_inside_ci": inside,
        "weighted": _ratio(w_hits, w_n),
        "successes": hits,
        "trials": n,
    }


def split_report(
    split: str,
    pop: Population,
    size: SizeResult,
    alloc: AllocationResult,
    counts: np.ndarray | None,
    invalid_lines: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Report of one split; `counts` are the impressions written per stratum (None: dry run)."""
    sizes = pop.sizes.astype(np.int64)
    n_h = alloc.target if counts is None else counts
    big_n, n = int(sizes.sum()), int(n_h.sum())
    frame = pop.strata.drop("sid").with_columns(n=pl.Series(n_h, dtype=pl.Int64))
    frame = frame.with_columns(
        population_share=pl.col("N") / big_n if big_n else pl.lit(None),
        sample_share=pl.col("n") / n if n else pl.lit(None),
        inclusion_probability=pl.col("n") / pl.col("N"),
        weight=pl.when(pl.col("n") > 0).then(pl.col("N") / pl.col("n")),
    )
    labels = (
        frame.group_by("click", "conversion", maintain_order=True)
        .agg(pl.col("N").sum(), pl.col("n").sum())
        .with_columns(
            population_share=pl.col("N") / big_n if big_n else pl.lit(None),
            sample_share=pl.col("n") / n if n else pl.lit(None),
            weight=pl.when(pl.col("n") > 0).then(pl.col("N") / pl.col("n")),
        )
    )
    report: dict[str, Any] = {
        "split": split,
        "population": big_n,
        "sample": n,
        "invalid_lines": invalid_lines,
        "size": size.as_dict(),
        "allocation": {"method": alloc.method, "notes": alloc.notes},
        "labels": labels.to_dicts(),
        "strata": frame.to_dicts(),
    }
    if counts is not None:
        report["estimates"] = _estimates(frame, size.confidence)
    report.update(extra or {})
    return report


def _estimates(frame: pl.DataFrame, confidence: float) -> dict[str, Any]:
    def total(col: str, where: pl.Expr) -> float:
        return float(frame.filter(where).get_column(col).sum())

    c = pl.col
    clicked, converted, sampled = c("click") == 1, c("conversion") == 1, c("n") > 0
    both = clicked & converted
    w = {  # population totals of the strata that were sampled: the weighted (N_h/n_h) sums
        "all": total("N", sampled),
        "click": total("N", sampled & clicked),
        "conv": total("N", sampled & converted),
        "both": total("N", sampled & both),
    }
    subsets = {"all": pl.lit(True), "click": clicked, "conv": converted, "both": both}
    pop = {k: int(total("N", e)) for k, e in subsets.items()}
    smp = {k: int(total("n", e)) for k, e in subsets.items()}
    return {
        "ctr": _estimate(
            pop["click"], pop["all"], smp["click"], smp["all"], w["click"], w["all"], confidence
        ),
        "cvr": _estimate(  # post-click conversion rate, as in ESMM
            pop["both"], pop["click"], smp["both"], smp["click"], w["both"], w["click"], confidence
        ),
        "conversion_rate": _estimate(  # conversions per impression: the calculator's p
            pop["conv"], pop["all"], smp["conv"], smp["all"], w["conv"], w["all"], confidence
        ),
    }


def _fmt(value: Any, digits: int = 6) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _stratum_name(row: dict[str, Any]) -> str:
    name = f"({row['click']},{row['conversion']})"
    for key, value in row.items():
        if key.startswith("by_"):
            name += f" {key[3:]}={'none' if value == -1 else value}"
    return name


STRATA_COLUMNS = ("stratum", "N_h", "pop. share", "n_h", "sample share", "incl. prob.", "weight")
ESTIMATE_COLUMNS = ("estimate", "population", "sample", "CI low", "CI high", "inside", "weighted")


def _strata_rows(report: dict[str, Any]) -> list[list[str]]:
    return [
        [
            _stratum_name(r),
            _fmt(r["N"]),
            _fmt(r["population_share"], 4),
            _fmt(r["n"]),
            _fmt(r["sample_share"], 4),
            _fmt(r["inclusion_probability"], 4),
            _fmt(r["weight"], 6),
        ]
        for r in report["strata"]
    ]


def _estimate_rows(report: dict[str, Any]) -> list[list[str]]:
    return [
        [name]
        + [_fmt(e[k]) for k in ("population", "sample", "ci_low", "ci_high")]
        + [_fmt(e["population_inside_ci"]), _fmt(e["weighted"])]
        for name, e in report.get("estimates", {}).items()
    ]


def _size_line(report: dict[str, Any]) -> str:
    s = report["size"]
    return (
        f"N={_fmt(s['population'])}  p={_fmt(s['p'])} ({s['p_source']})  "
        f"confidence={s['confidence']}  z={s['z']:.4f}  e={_fmt(s['margin'])}  "
        f"n0={_fmt(s['n0'])}  n={_fmt(s['n_calculated'])}  method={s['method']}  "
        f"allocated={_fmt(report['sample'])}"
    )


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or make_console(stderr=True)
    mode = "dry run: nothing written" if report.get("dry_run") else f"-> {report['output']}"
    console.print(f"[bold]deepcvr sample[/] seed {report['seed']}  {mode}")
    for split, rep in report["splits"].items():
        console.print(f"[bold]{split}[/]: {_size_line(rep)}", markup=True, highlight=False)
        for note in rep["allocation"]["notes"]:
            console.print(f"  note: {note}", markup=False)
        table = Table(title=f"{split}: strata ({rep['allocation']['method']})")
        for col in STRATA_COLUMNS:
            table.add_column(col, justify="left" if col == "stratum" else "right")
        for row in _strata_rows(rep):
            table.add_row(*row)
        console.print(table)
        if "estimates" in rep:
            est = Table(title=f"{split}: sample estimates ({rep['size']['confidence']:.0%} Wilson)")
            for col in ESTIMATE_COLUMNS:
                est.add_column(col, justify="left" if col == "estimate" else "right")
            for row in _estimate_rows(rep):
                est.add_row(*row)
            console.print(est)


def _md_table(header: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# deepcvr sample report",
        "",
        f"- seed: {report['seed']}",
        f"- source: {report['source']}",
        f"- allocation: {report['settings']['allocation']}, "
        f"min per stratum {report['settings']['min_per_stratum']}, "
        f"by: {', '.join(report['settings']['by']) or '-'}",
        "",
    ]
    for split, rep in report["splits"].items():
        lines += [f"## {split}", "", _size_line(rep), ""]
        lines += [f"- note: {note}" for note in rep["allocation"]["notes"]]
        lines += ["", *_md_table(STRATA_COLUMNS, _strata_rows(rep)), ""]
        if "estimates" in rep:
            lines += [*_md_table(ESTIMATE_COLUMNS, _estimate_rows(rep)), ""]
            lines.append(
                f"Files: {rep['skeleton_lines']} impressions, {rep['common_lines']} common rows, "
                f"{rep['missing_common_rows']} referenced common rows missing from the input."
            )
            lines.append("")
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    (out_dir / REPORT_JSON).write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out_dir / REPORT_MD).write_text(markdown(report))
