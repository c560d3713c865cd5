"""Small inline-SVG charts for the report: no plotting library, no external resource.

Each function returns one `<svg>` element with the given id; colours and fonts come from the
report's inline CSS (classes `s0`, `s1`, ... per series), and every mark has a `<title>` tooltip.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

WIDTH = 640


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def human(x: float) -> str:
    """1234 -> 1.2k: short tick labels."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.3g}{unit}"
    return f"{x:.3g}"


def percent(x: float) -> str:
    return f"{x:.3g}%" if x >= 0.01 or x == 0 else f"{x:.1e}%"


def nice_ticks(hi: float, count: int = 5) -> list[float]:
    """0 and round steps (1, 2, 5 x 10^k) up to at least `hi`."""
    if hi <= 0:
        return [0.0, 1.0]
    raw = hi / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return [i * step for i in range(math.ceil(hi / step - 1e-9) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten covering [lo, hi]."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if a == b:
        b += 1
    return [10.0**e for e in range(a, b + 1)]


def _svg(plot_id: str, title: str, height: float, body: list[str]) -> str:
    tid = f"{plot_id}-title"
    return (
        f'<svg id="{escape(plot_id)}" class="plot" viewBox="0 0 {WIDTH} {_num(height)}" '
        f'role="img" aria-labelledby="{escape(tid)}">'
        f'<title id="{escape(tid)}">{escape(title)}</title>' + "".join(body) + "</svg>"
    )


def _empty(plot_id: str, title: str, height: float = 120) -> str:
    return _svg(
        plot_id,
        title,
        height,
        [
            f'<text class="empty" x="{WIDTH / 2}" y="{height / 2}" text-anchor="middle">'
            "no data</text>"
        ],
    )


def bar_chart(
    plot_id: str,
    title: str,
    categories: Sequence[str],
    series: dict[str, Sequence[float | None]],
    log: bool = False,
    fmt: Callable[[float], str] = human,
    axis_label: str = "",
) -> str:
    """Horizontal grouped bars: one group per category, one bar per series (split)."""
    values = [v for vs in series.values() for v in vs if v is not None and (v > 0 or not log)]
    if not categories or not values:
        return _empty(plot_id, title)
    nser = len(series)
    bar = 9 if nser > 1 else 12
    group = bar * nser + 6
    left, right, top, legend = 128, 70, 8, 18 if nser > 1 else 0
    height = top + legend + group * len(categories) + 34
    plot_w = WIDTH - left - right
    if log:
        ticks = log_ticks(min(values), max(values))
        lo, hi = math.log10(ticks[0]), math.log10(ticks[-1])

        def scale(v: float) -> float:
            return (math.log10(v) - lo) / (hi - lo) * plot_w if v > 0 else 0.0

    else:
        ticks = nice_ticks(max(values))

        def scale(v: float) -> float:
            return v / ticks[-1] * plot_w

    y0 = top + legend
    body = []
    for t in ticks:
        x = left + scale(t)
        body.append(
            f'<line class="grid" x1="{_num(x)}" x2="{_num(x)}" y1="{y0}" '
            f'y2="{_num(height - 30)}"/><text class="tick" x="{_num(x)}" '
            f'y="{_num(height - 18)}" text-anchor="middle">{escape(fmt(t))}</text>'
        )
    if axis_label:
        body.append(
            f'<text class="axis-label" x="{left + plot_w / 2}" y="{_num(height - 4)}" '
            f'text-anchor="middle">{escape(axis_label)}</text>'
        )
    for i, name in enumerate(series if nser > 1 else ()):
        x = left + i * 90
        body.append(
            f'<rect class="s{i}" x="{x}" y="{top}" width="10" height="10"/>'
            f'<text class="legend" x="{x + 14}" y="{top + 9}">{escape(name)}</text>'
        )
    for c, cat in enumerate(categories):
        gy = y0 + c * group
        body.append(
            f'<text class="cat" x="{left - 6}" y="{_num(gy + group / 2 + 1)}" '
            f'text-anchor="end" dominant-baseline="middle">{escape(cat)}</text>'
        )
        for s, (name, vals) in enumerate(series.items()):
            v = vals[c]
            if v is None:
                continue
            w = max(scale(v), 0.0) if not log or v > 0 else 0.0
            y = gy + 3 + s * bar
            tip = f"{cat} {name}: {fmt(v)}" if nser > 1 else f"{cat}: {fmt(v)}"
            body.append(
                f'<rect class="s{s}" x="{left}" y="{y}" width="{_num(max(w, 0.5))}" '
                f'height="{bar - 1}"><title>{escape(tip)}</title></rect>'
                f'<text class="value" x="{_num(left + w + 3)}" y="{_num(y + bar / 2)}" '
                f'dominant-baseline="middle">{escape(fmt(v))}</text>'
            )
    body.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{y0}" y2="{_num(height - 30)}"/>')
    return _svg(plot_id, title, height, body)


def histogram(
    plot_id: str,
    title: str,
    bins: Sequence[tuple[float, float, int]],
    xlabel: str,
    ylabel: str = "rows",
) -> str:
    """Vertical bars over [lo, hi) bins."""
    if not bins or not any(n for _lo, _hi, n in bins):
        return _empty(plot_id, title, 200)
    height, left, right, top, bottom = 220, 56, 16, 10, 40
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    x_lo, x_hi = bins[0][0], bins[-1][1]
    y_ticks = nice_ticks(max(n for *_b, n in bins), 4)

    def sx(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * plot_w

    def sy(y: float) -> float:
        return top + plot_h - y / y_ticks[-1] * plot_h

    body = []
    for t in y_ticks:
        body.append(
            f'<line class="grid" x1="{left}" x2="{WIDTH - right}" y1="{_num(sy(t))}" '
            f'y2="{_num(sy(t))}"/><text class="tick" x="{left - 4}" y="{_num(sy(t) + 3)}" '
            f'text-anchor="end">{escape(human(t))}</text>'
        )
    for t in nice_ticks(x_hi - x_lo, 8):
        if x_lo + t <= x_hi:
            body.append(
                f'<text class="tick" x="{_num(sx(x_lo + t))}" y="{height - bottom + 14}" '
                f'text-anchor="middle">{escape(human(x_lo + t))}</text>'
            )
    for lo, hi, n in bins:
        if n:
            label = f"{human(lo)}" if hi - lo == 1 else f"{human(lo)}-{human(hi - 1)}"
            body.append(
                f'<rect class="s0" x="{_num(sx(lo))}" y="{_num(sy(n))}" '
                f'width="{_num(max(sx(hi) - sx(lo) - 0.5, 0.5))}" '
                f'height="{_num(top + plot_h - sy(n))}"><title>{escape(label)}: {n:,} '
                f"{escape(ylabel)}</title></rect>"
            )
    body.append(
        f'<line class="axis" x1="{left}" x2="{WIDTH - right}" y1="{top + plot_h}" '
        f'y2="{top + plot_h}"/><text class="axis-label" x="{left + plot_w / 2}" '
        f'y="{height - 8}" text-anchor="middle">{escape(xlabel)}</text>'
        f'<text class="axis-label" transform="rotate(-90)" x="{-(top + plot_h / 2)}" y="12" '
        f'text-anchor="middle">{escape(ylabel)}</text>'
    )
    return _svg(plot_id, title, height, body)


def loglog(
    plot_id: str,
    title: str,
    points: Sequence[tuple[float, float]],
    xlabel: str = "rank",
    ylabel: str = "occurrences",
) -> str:
    """A rank-frequency line on log-log axes (a straight line is Zipf's law)."""
    pts = [(x, y) for x, y in points if x > 0 and y > 0]
    if not pts:
        return _empty(plot_id, title, 180)
    height, left, right, top, bottom = 200, 50, 24, 10, 36
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    xt = log_ticks(min(x for x, _ in pts), max(x for x, _ in pts))
    yt = log_ticks(min(y for _, y in pts), max(y for _, y in pts))

    def sx(x: float) -> float:
        return left + math.log10(x / xt[0]) / math.log10(xt[-1] / xt[0]) * plot_w

    def sy(y: float) -> float:
        return top + plot_h - math.log10(y / yt[0]) / math.log10(yt[-1] / yt[0]) * plot_h

    body = []
    for t in xt:
        body.append(
            f'<line class="grid" x1="{_num(sx(t))}" x2="{_num(sx(t))}" y1="{top}" '
            f'y2="{top + plot_h}"/><text class="tick" x="{_num(sx(t))}" '
            f'y="{top + plot_h + 14}" text-anchor="middle">{escape(human(t))}</text>'
        )
    for t in yt:
        body.append(
            f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{_num(sy(t))}" '
            f'y2="{_num(sy(t))}"/><text class="tick" x="{left - 4}" y="{_num(sy(t) + 3)}" '
            f'text-anchor="end">{escape(human(t))}</text>'
        )
    path = " ".join(f"{_num(sx(x))},{_num(sy(y))}" for x, y in pts)
    body.append(f'<polyline class="line" points="{path}"/>')
    if len(pts) == 1:
        x, y = pts[0]
        body.append(f'<circle class="dot" cx="{_num(sx(x))}" cy="{_num(sy(y))}" r="3"/>')
    body.append(
        f'<text class="axis-label" x="{left + plot_w / 2}" y="{height - 6}" '
        f'text-anchor="middle">{escape(xlabel)}</text>'
        f'<text class="axis-label" transform="rotate(-90)" x="{-(top + plot_h / 2)}" y="11" '
        f'text-anchor="middle">{escape(ylabel)}</text>'
    )
    return _svg(plot_id, title, height, body)
