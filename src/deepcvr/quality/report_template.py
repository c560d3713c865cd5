"""HTML building blocks of the report: page shell with inline CSS, sections, tables, figures.

Plain string templates (no template engine dependency); every value passes through `escape`.
The page declares a Content-Security-Policy that forbids any network load, so even a future
mistake cannot make a viewer's browser fetch something.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg2: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
header { padding: 20px 32px 12px; border-bottom: 1px solid var(--line); background: var(--bg2); }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 2px 0; color: var(--muted); }
nav { padding: 8px 32px; border-bottom: 1px solid var(--line); font-size: 13px; }
nav a { margin-right: 14px; color: #0969da; text-decoration: none; }
main { padding: 8px 32px 40px; max-width: 1240px; }
section { margin-top: 22px; }
h2 { font-size: 18px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
p.note { color: var(--muted); margin: 4px 0 10px; max-width: 900px; }
table { border-collapse: collapse; margin: 6px 0 14px; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; vertical-align: top; }
td { white-space: nowrap; } td.wrap { white-space: normal; }
th { background: var(--bg2); text-align: left; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
td code { font-size: 12px; word-break: break-all; }
.ok { color: #1a7f37; font-weight: 600; }
.bad { color: #cf222e; font-weight: 600; }
.warn { color: #9a6700; font-weight: 600; }
figure { margin: 8px 0 16px; }
section > figure { max-width: 860px; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 2px; }
.grid2 { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 8px 24px; }
.grid3 { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 6px 18px; }
svg.plot { width: 100%; height: auto; display: block; }
svg text { font-size: 11px; fill: var(--fg); }
svg .tick { font-size: 10px; fill: var(--muted); }
svg .axis-label, svg .legend { font-size: 11px; fill: var(--muted); }
svg .value { font-size: 10px; fill: var(--muted); }
svg .empty { fill: #8c959f; font-size: 13px; }
svg .grid { stroke: #eaeef2; stroke-width: 1; }
svg .axis { stroke: #59636e; stroke-width: 1; }
svg .line { fill: none; stroke: #4c78a8; stroke-width: 1.6; }
svg .dot { fill: #4c78a8; }
svg .s0 { fill: #4c78a8; } svg .s1 { fill: #f58518; } svg .s2 { fill: #54a24b; }
svg .s3 { fill: #b279a2; }
.grid3 svg text { font-size: 15px; } .grid3 svg .tick { font-size: 14px; }
.grid3 svg .axis-label { font-size: 14px; }
@media (max-width: 900px) { .grid2, .grid3 { grid-template-columns: 1fr; } }
"""


def page(title: str, meta: Sequence[str], nav: Sequence[tuple[str, str]], body: str) -> str:
    links = "".join(f'<a href="#{escape(i)}">{escape(t)}</a>' for i, t in nav)
    lines = "".join(f"<p>{m}</p>" for m in meta)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f"<body><header><h1>{escape(title)}</h1>{lines}</header>"
        f"<nav>{links}</nav><main>{body}</main></body></html>\n"
    )


def section(section_id: str, title: str, note: str, *parts: str) -> str:
    intro = f'<p class="note">{note}</p>' if note else ""
    head = f'<section id="{escape(section_id)}"><h2>{escape(title)}</h2>{intro}'
    return head + "".join(parts) + "</section>"


def figure(svg: str, caption: str = "") -> str:
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f"<figure>{svg}{cap}</figure>"


class Cell:
    """Pre-rendered (already escaped) HTML for a table cell, with an optional class."""

    def __init__(self, html: str, cls: str = "") -> None:
        self.html, self.cls = html, cls


def _cell(value: Any) -> str:
    if isinstance(value, Cell):
        return (
            f'<td class="{value.cls}">{value.html}</td>' if value.cls else f"<td>{value.html}</td>"
        )
    if value is None:
        return '<td class="num">–</td>'
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, int):
        return f'<td class="num">{value:,}</td>'
    if isinstance(value, float):
        return f'<td class="num">{value:,.4g}</td>'
    return f"<td>{escape(str(value))}</td>"


def table(table_id: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str) -> str:
    """A table with a stable id; an empty one still renders (one row saying so)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    if rows:
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    else:
        body = f'<tr><td colspan="{len(headers)}">{escape(empty)}</td></tr>'
    return (
        f'<table id="{escape(table_id)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def share(n: int, total: int) -> Cell:
    """`1,234 (5.67%)`: a count with its share of a total."""
    if not total:
        return Cell(f"{n:,}", "num")
    pct = 100 * n / total
    text = f"{pct:.3g}%" if pct >= 0.01 or n == 0 else f"{pct:.2e}%"
    return Cell(f"{n:,} <small>({text})</small>", "num")


def pct(x: float | None, digits: int = 3) -> Cell:
    return Cell("–" if x is None else f"{100 * x:.{digits}f}%", "num")


def status(ok: bool, good: str = "holds", bad: str = "FAILS") -> Cell:
    return Cell(escape(good), "ok") if ok else Cell(escape(bad), "bad")


def code(text: str | None, limit: int = 160) -> Cell:
    """Raw bytes shown safely: separators 0x01-0x03 and other controls as visible escapes."""
    if text is None:
        return Cell("")
    cut = text[:limit]
    shown = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in cut)
    more = "…" if len(text) > limit else ""
    return Cell(f"<code>{escape(shown)}{more}</code>", "wrap")
