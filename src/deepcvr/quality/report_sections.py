"""The report's sections: each turns the values `report.collect` gathered into tables and plots
with stable ids (`table-...`, `plot-...`) that tests and readers can rely on."""

from __future__ import annotations

from html import escape
from typing import Any

from deepcvr.aliccp import FIELDS, Field
from deepcvr.quality import plots
from deepcvr.quality.report_template import (
    Cell,
    code,
    figure,
    page,
    pct,
    section,
    share,
    status,
    table,
)

STRATA = ((0, 0), (1, 0), (1, 1), (0, 1))
SIDE_LABEL = {"sample": "impression", "common": "common row"}
SIDE_PLURAL = {"sample": "impressions", "common": "common rows"}
MAX_SCENARIOS = 30


def render(data: dict[str, Any]) -> str:
    """The whole page from the values `report.collect` gathered."""
    splits = data["splits"]
    meta = data["meta"]
    sections = [
        _overview(data, splits),
        _fields(data, splits, FIELDS),
        _structures(data, splits),
        _zipf(data, FIELDS),
        _scenarios(data, splits),
        _accounting(data["accounting"]),
        _rejects(data),
    ]
    nav = [
        ("overview", "Overview"),
        ("fields", "Fields"),
        ("structures", "Structures per row"),
        ("zipf", "Feature frequencies"),
        ("scenarios", "Scenarios"),
        ("accounting", "Accounting"),
        ("rejects", "Rejects"),
    ]
    info = [
        f"database <code>{escape(meta['database'])}</code>",
        f"splits: {escape(', '.join(splits) or 'none')} · generated {escape(meta['generated'])}"
        f" · deepcvr {escape(meta['version'])}",
    ]
    return page("deepcvr data profile", info, nav, "".join(sections))


def _overview(data: dict[str, Any], splits: list[str]) -> str:
    counts = data["rows"]
    rows = [
        [
            name,
            *[per.get(s) if name not in ("field", "feature") else None for s in splits],
            per["*"],
        ]
        for name, per in counts.items()
    ]
    strata_rows, shares = [], {}
    for split in splits:
        per = data["strata"].get(split, {})
        n = sum(per.values())
        clicks = per.get((1, 0), 0) + per.get((1, 1), 0)
        strata_rows.append(
            [
                split,
                n,
                *[share(per.get(s, 0), n) for s in STRATA],
                pct(clicks / n if n else None),
                pct(per.get((1, 1), 0) / clicks if clicks else None),
                pct(per.get((1, 1), 0) / n if n else None, 4),
            ]
        )
        shares[split] = [100 * per.get(s, 0) / n if n else None for s in STRATA]
    names = [f"click {c}, conversion {v}" for c, v in STRATA]
    return section(
        "overview",
        "Overview",
        "Rows per table and label strata per split. CTR = clicks / impressions; CVR = "
        "conversions after a click / clicks; CTCVR = conversions after a click / impressions. "
        "(click 0, conversion 1) rows are a funnel anomaly of Ali-CCP, kept and flagged.",
        table("table-rows", ["table", *splits, "all"], rows, "no tables"),
        table(
            "table-strata",
            ["split", "impressions", *names, "CTR", "CVR", "CTCVR"],
            strata_rows,
            "no impressions",
        ),
        figure(
            plots.bar_chart(
                "plot-strata",
                "Label strata (share of impressions, log scale)",
                names,
                shares,
                log=True,
                fmt=plots.percent,
                axis_label="share of impressions",
            ),
            "Share of impressions per (click, conversion) stratum; log scale.",
        ),
    )


def _fields(data: dict[str, Any], splits: list[str], fields: tuple[Field, ...]) -> str:
    cov, zipf, counts = data["coverage"], data["zipf"], data["rows"]
    rows, series = [], {s: [] for s in splits}
    for f in fields:
        kind = "common" if f.entity == "user" else "sample"
        base_table = "common_feature_group" if kind == "common" else "sample"
        cells = []
        for split in splits:
            total = counts[base_table].get(split, 0)
            having, structures = cov.get((kind, split, f.field_id), (0, 0))
            cells += [share(having, total), structures / having if having else None]
            series[split].append(100 * having / total if total else None)
        z = zipf.get(f.field_id, {})
        rows.append([f.field_id, f.name, SIDE_PLURAL[kind], *cells, z.get("ids", 0)])
    headers = ["field", "name", "counted over"]
    for split in splits:
        headers += [f"{split}: rows having it", f"{split}: structures per such row"]
    return section(
        "fields",
        "Fields",
        "Coverage: the share of impressions (item, combination and context fields) or of "
        "common rows (user fields) holding the field at least once. Distinct ids over all splits.",
        table("table-coverage", [*headers, "distinct ids"], rows, "no fields"),
        figure(
            plots.bar_chart(
                "plot-coverage",
                "Field coverage (%)",
                [f.field_id for f in fields],
                series,
                fmt=lambda v: f"{v:.3g}%",
                axis_label="% of rows having the field",
            ),
            "Share of rows holding each field, per split.",
        ),
    )


def _structures(data: dict[str, Any], splits: list[str]) -> str:
    figs = []
    for kind in ("sample", "common"):
        for split in splits:
            label = SIDE_LABEL[kind]
            figs.append(
                figure(
                    plots.histogram(
                        f"plot-hist-{kind}-{split}",
                        f"Structures per {label}, {split}",
                        data["hist"].get((kind, split), []),
                        f"loaded structures per {label}",
                        f"{label}s",
                    ),
                    f"{split}: loaded feature structures per {label}.",
                )
            )
    return section(
        "structures",
        "Structures per row",
        "How many feature structures each impression and each common row holds after load "
        "(rows whose structures were all rejected count as 0).",
        f'<div class="grid2">{"".join(figs)}</div>',
    )


def _zipf(data: dict[str, Any], fields: tuple[Field, ...]) -> str:
    figs = []
    for f in fields:
        z = data["zipf"].get(f.field_id)
        title = f"{f.field_id} ({f.name})"
        caption = (
            f"{f.field_id}: {z['ids']:,} ids, {z['total']:,} structures, top id "
            f"{100 * z['top'] / z['total']:.3g}%"
            if z
            else f"{f.field_id}: no structures"
        )
        svg = plots.loglog(f"plot-zipf-{f.field_id}", title, z["points"] if z else [])
        figs.append(figure(svg, caption))
    return section(
        "zipf",
        "Feature frequencies",
        "Rank-frequency (Zipf) plots per field on log-log axes: the n-th most frequent feature "
        "id against its occurrences over both long tables and all splits.",
        f'<div class="grid3">{"".join(figs)}</div>',
    )


def _scenarios(data: dict[str, Any], splits: list[str]) -> str:
    rows, order, ctr, cvr = [], [], {s: {} for s in splits}, {s: {} for s in splits}
    for scenario, split, n, clicks, conv in data["scenarios"]:
        rows.append(
            [
                str(scenario),
                split,
                n,
                clicks,
                pct(clicks / n if n else None),
                conv,
                pct(conv / clicks if clicks else None),
            ]
        )
        if scenario not in order:
            order.append(scenario)
        ctr[split][scenario] = 100 * clicks / n if n else None
        cvr[split][scenario] = 100 * conv / clicks if clicks else None
    shown = order[:MAX_SCENARIOS]
    cats = [str(s) for s in shown]

    def series(values: dict[str, dict[int, float | None]]) -> dict[str, list[float | None]]:
        return {s: [values[s].get(sc) for sc in shown] for s in splits}

    fmt = lambda v: f"{v:.3g}%"  # noqa: E731
    return section(
        "scenarios",
        "Scenarios",
        "CTR and CVR by business scenario (field 301, one feature id per scenario); "
        f"the {MAX_SCENARIOS} largest scenarios are plotted.",
        table(
            "table-scenario",
            [
                "scenario (feature id)",
                "split",
                "impressions",
                "clicks",
                "CTR",
                "conversions after click",
                "CVR",
            ],
            rows,
            "no impressions carry field 301",
        ),
        '<div class="grid2">',
        figure(
            plots.bar_chart(
                "plot-scenario-ctr",
                "CTR by scenario (%)",
                cats,
                series(ctr),
                fmt=fmt,
                axis_label="CTR (%)",
            ),
            "CTR per scenario and split.",
        ),
        figure(
            plots.bar_chart(
                "plot-scenario-cvr",
                "CVR by scenario (%)",
                cats,
                series(cvr),
                fmt=fmt,
                axis_label="CVR (%)",
            ),
            "CVR per scenario and split.",
        ),
        "</div>",
    )


def _accounting(rows: list[dict[str, Any]]) -> str:
    keys = ["split", "file", "lines", "loaded_lines", "rejected_lines", "flagged_lines"]
    keys += ["crlf_lines", "raw_structures", "loaded_structures", "rejected_structures"]
    body = [
        [r[k] for k in keys] + [r["db_rows"], r["db_structures"], status(r["ok"])] for r in rows
    ]
    where = {
        "manifest": "the transform's _manifest.json files",
        "metadata": "the metadata store (per split)",
    }
    sources = ", ".join(where[s] for s in sorted({r["source"] for r in rows})) or "none found"
    note = (
        "Every raw line is a loaded row or a rejected line, and every raw structure a loaded "
        "structure or a rejected one (flagged lines are loaded). The identity is proved on the "
        f"transform's counts and again on the database's rows and rejects table. Source: {sources}."
    )
    headers = ["split", "file", "raw lines", "loaded rows", "rejected lines", "flagged"]
    headers += ["CRLF lines", "raw structures", "loaded structures", "rejected structures"]
    headers += ["database rows", "database structures", "identity"]
    return section(
        "accounting",
        "Accounting",
        escape(note),
        table(
            "table-accounting",
            headers,
            body,
            "no accounting found (no _manifest.json in the Parquet directory, no metadata "
            "records); pass the transform output directory",
        ),
    )


def _rejects(data: dict[str, Any]) -> str:
    summary = [[*r[:-1], str(r[-1])] for r in data["reject_summary"]]  # a line number: no 1,234
    examples = [
        [
            reason,
            action,
            Cell(f"<code>{escape(file)}:{line}</code>"),
            pos,
            Cell(escape(detail or ""), "wrap"),
            code(raw),
        ]
        for reason, action, _split, file, line, pos, detail, raw in data["reject_examples"]
    ]
    return section(
        "rejects",
        "Rejects",
        "Lines and structures not loaded as they are, by reason. Action <b>rejected</b>: not "
        "loaded; <b>flagged</b>: loaded and marked. Structure rejects carry the 0-based "
        "position of the structure; separators are shown as \\x01, \\x02, \\x03.",
        table(
            "table-rejects",
            ["split", "file", "reason", "action", "rows", "structures", "first line"],
            summary,
            "no rejects: every line and structure was loaded",
        ),
        "<h3>Examples</h3>",
        table(
            "table-reject-examples",
            ["reason", "action", "where", "position", "detail", "raw text"],
            examples,
            "no rejects",
        ),
    )
