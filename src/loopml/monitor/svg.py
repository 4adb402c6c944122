"""Tiny inline-SVG plots for the HTML report: grouped histograms, ranked bars, lines.

No JavaScript library and no network: each function returns one ``<svg class="plot">``
string with its data drawn as ``rect``/``polyline`` elements.
"""

from __future__ import annotations

from html import escape

REF_COLOR, CUR_COLOR, BAD_COLOR, OK_COLOR = "#8da0cb", "#fc8d62", "#d62728", "#2ca02c"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _svg(kind: str, name: str, w: int, h: int, body: list[str]) -> str:
    return (f'<svg class="plot" data-plot="{escape(kind)}" data-name="{escape(name)}" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg" role="img" '
            f'aria-label="{escape(kind)} {escape(name)}">' + "".join(body) + "</svg>")


def histogram(name: str, bins: list[str], ref: list[int], cur: list[int], *, w: int = 460, h: int = 200) -> str:
    """Reference vs current proportions per bin, side by side."""
    rs, cs = max(sum(ref), 1), max(sum(cur), 1)
    pr, pc = [r / rs for r in ref], [c / cs for c in cur]
    top = max(pr + pc + [1e-9])
    n = max(len(bins), 1)
    left, bottom, plot_h = 30, 40, h - 55
    bw = (w - left - 10) / n
    body = [f'<line x1="{left}" y1="{h - bottom}" x2="{w - 10}" y2="{h - bottom}" stroke="#999"/>',
            f'<text x="{left}" y="12" font-size="11">{escape(name)}: share of rows per bin '
            f'(<tspan fill="{REF_COLOR}">reference</tspan> / <tspan fill="{CUR_COLOR}">current</tspan>)</text>']
    for i, label in enumerate(bins):
        x = left + i * bw
        for j, (p, color) in enumerate(((pr[i], REF_COLOR), (pc[i], CUR_COLOR))):
            bh = plot_h * p / top
            body.append(f'<rect class="bar" x="{x + 1 + j * (bw - 2) / 2:.1f}" y="{h - bottom - bh:.1f}" '
                        f'width="{max((bw - 2) / 2, 0.5):.1f}" height="{bh:.1f}" fill="{color}">'
                        f'<title>{escape(label)}: {p:.1%}</title></rect>')
        if n <= 14:
            body.append(f'<text x="{x + bw / 2:.1f}" y="{h - bottom + 12}" font-size="8" text-anchor="end" '
                        f'transform="rotate(-30 {x + bw / 2:.1f} {h - bottom + 12})">{escape(label[:18])}</text>')
    return _svg("histogram", name, w, h, body)


def ranked_bars(items: list[tuple[str, float, bool]], *, title: str, w: int = 640) -> str:
    """Horizontal bars, largest first; ``items`` are ``(label, value, flagged)``. A line marks 1.0."""
    items = sorted(items, key=lambda t: -t[1])
    row = 18
    h = 30 + row * max(len(items), 1)
    left = 170
    top = max([v for _, v, _ in items] + [1.0]) * 1.05
    scale = (w - left - 60) / top
    body = [f'<text x="4" y="14" font-size="12">{escape(title)}</text>']
    for i, (label, value, flagged) in enumerate(items):
        y = 22 + i * row
        body.append(f'<text x="{left - 6}" y="{y + 12}" font-size="11" text-anchor="end">{escape(label[:28])}</text>')
        body.append(f'<rect class="bar" x="{left}" y="{y + 2}" width="{max(value * scale, 0.5):.1f}" height="{row - 5}" '
                    f'fill="{BAD_COLOR if flagged else OK_COLOR}"><title>{escape(label)}: {value:.3g}</title></rect>')
        body.append(f'<text x="{left + value * scale + 4:.1f}" y="{y + 12}" font-size="10">{value:.2f}</text>')
    x1 = left + scale
    body.append(f'<line x1="{x1:.1f}" y1="20" x2="{x1:.1f}" y2="{h - 4}" stroke="#333" stroke-dasharray="4 3"/>')
    return _svg("ranking", title, w, h, body)


def lines(title: str, xs: list[str], series: dict[str, list[float | None]], *, w: int = 640, h: int = 220) -> str:
    """One polyline per series over the window labels ``xs`` (None = gap)."""
    vals = [v for s in series.values() for v in s if v is not None]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    left, right, top_m, bottom = 45, 120, 20, 30
    n = max(len(xs), 2)
    sx = (w - left - right) / (n - 1)
    sy = (h - top_m - bottom) / (hi - lo)
    body = [f'<text x="4" y="14" font-size="12">{escape(title)}</text>',
            f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="#999"/>',
            f'<text x="{left - 4}" y="{top_m + 8}" font-size="9" text-anchor="end">{hi:.3g}</text>',
            f'<text x="{left - 4}" y="{h - bottom}" font-size="9" text-anchor="end">{lo:.3g}</text>']
    for k, (label, ys) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        pts = [f"{left + i * sx:.1f},{h - bottom - (y - lo) * sy:.1f}" for i, y in enumerate(ys) if y is not None]
        if pts:
            body.append(f'<polyline class="series" fill="none" stroke="{color}" stroke-width="2" points="{" ".join(pts)}">'
                        f'<title>{escape(label)}</title></polyline>')
            body.extend(f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="2.5" fill="{color}"/>' for p in pts)
        body.append(f'<text x="{w - right + 6}" y="{top_m + 12 * k + 8}" font-size="10" fill="{color}">{escape(label[:20])}</text>')
    if xs:
        body.append(f'<text x="{left}" y="{h - 8}" font-size="9">{escape(xs[0][:25])}</text>')
        body.append(f'<text x="{w - right}" y="{h - 8}" font-size="9" text-anchor="end">{escape(xs[-1][:25])}</text>')
    return _svg("timeseries", title, w, h, body)
