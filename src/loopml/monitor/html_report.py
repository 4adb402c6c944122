"""A self-contained HTML monitoring report: one file, inline SVG plots, no network.

Sections: the verdict and the rule that decided it; drift scores ranked (each column's
statistic relative to its threshold, so 1.0 is the line); reference vs current histogram
per column; drift per segment (one verdict per value of a column); metrics over time
(drift share and scores per window, live metrics once labels arrive); data quality and
volume against the log's history.
"""

from __future__ import annotations

import math
import time
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopml.monitor import svg

if TYPE_CHECKING:
    from loopml.monitor.quality import QualityReport
    from loopml.monitor.result import DriftReport, FeatureDrift

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.verdict{padding:10px 14px;border-radius:6px;font-weight:600;display:inline-block}
.drift{background:#fde0dc;color:#a4161a}.nodrift{background:#dff3e4;color:#1b5e20}
.undecided{background:#fff4ce;color:#7a5b00}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:12px}.muted{color:#777}.bad{color:#a4161a;font-weight:600}
"""

MAX_HISTORY_SERIES = 8  # lines in the "drift statistic per column per window" plot

_VERDICT_CLASS = {"drift": "drift", "no drift": "nodrift", "could not decide": "undecided"}
_VERDICT_TEXT = {"drift": "DRIFT DETECTED", "no drift": "NO DRIFT", "could not decide": "COULD NOT DECIDE"}

# counts the plots that actually laid out (non-empty box): a headless browser can check it
_JS = """
window.addEventListener('load',function(){var n=0;document.querySelectorAll('svg.plot').forEach(function(s){
var r=s.getBoundingClientRect();if(r.width>0&&r.height>0&&s.querySelectorAll('rect,polyline').length>0)n++;});
document.body.setAttribute('data-plots-rendered',String(n));});
"""


def drift_score(f: "FeatureDrift") -> float:
    """A column's drift relative to its threshold: >= 1 means drifted."""
    if f.statistic is None or f.threshold is None:
        return 0.0
    if f.method in ("ks", "chi2"):
        q = f.q_value if f.q_value is not None else (f.p_value or 1.0)
        return -math.log10(max(q, 1e-300)) / -math.log10(f.threshold)
    return f.statistic / f.threshold


def most_drifted(report: "DriftReport", history: list[dict[str, Any]], n: int) -> list[str]:
    """The ``n`` columns of the history to plot, most drifted first: by the number of windows
    (the history's and this report's) in which the column drifted, then by its drift score in
    this report (statistic or q-value relative to its threshold), then by name. The raw
    statistics of different methods are not comparable, so they never rank."""
    names = {k.removeprefix("drift.feature.") for h in history for k in h["metrics"]
             if k.startswith("drift.feature.") and not k.endswith(".drifted")}
    now = {f.name: f for f in report.features}
    times = {name: sum(bool(h["metrics"].get(f"drift.feature.{name}.drifted")) for h in history)
             + bool(name in now and now[name].drifted) for name in names}
    score = {name: drift_score(now[name]) if name in now else 0.0 for name in names}
    return sorted(names, key=lambda name: (-times[name], -score[name], name))[:n]


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.2e}" if x != 0 and abs(x) < 1e-3 else f"{x:.4f}"
    return escape(str(x))


def _served(window: dict[str, Any]) -> str:
    served = window.get("served_by") or {}
    if not served:
        return ""
    return " served by " + escape(", ".join(f"v{v} ({n:,})" for v, n in served.items()))


def _feature_table(report: "DriftReport") -> str:
    rows = ["<tr><th>column</th><th>kind</th><th>method</th><th>statistic</th><th>p-value</th><th>q-value</th>"
            "<th>threshold</th><th>verdict</th><th>status / unseen categories</th></tr>"]
    for f in sorted(report.features, key=lambda f: -drift_score(f)):
        verdict = '<span class="bad">DRIFT</span>' if f.drifted else ("ok" if f.ok else "unchecked")
        note = escape(f.status)
        if f.unseen:
            note += "; unseen: " + escape(", ".join(f"{k} ({v})" for k, v in list(f.unseen.items())[:10]))
        rows.append(f"<tr><td>{escape(f.name)}</td><td>{f.kind}</td><td>{f.method}</td><td>{_fmt(f.statistic)}</td>"
                    f"<td>{_fmt(f.p_value)}</td><td>{_fmt(f.q_value)}</td><td>{_fmt(f.threshold)}</td>"
                    f"<td>{verdict}</td><td>{note}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def segment_verdict(r: "DriftReport") -> str:
    """``"DRIFT"``, ``"no drift"`` or ``"not checked: <why>"`` for one segment's report."""
    if r.drifted:
        return "DRIFT"
    if not any(f.ok for f in r.features):
        return "not checked: " + (r.problems[0].status if r.problems else "no column to check")
    return "no drift"


def _segment_section(column: str, segments: dict[str, "DriftReport"]) -> str:
    parts = [f'<section id="segments" data-segment-column="{escape(column)}">',
             f"<h2>Drift per segment of <code>{escape(column)}</code></h2>"]
    if not segments:
        parts.append("<p>No segment in this window.</p></section>")
        return "".join(parts)
    top = {k: max([drift_score(f) for f in r.features if f.ok] or [0.0]) for k, r in segments.items()}
    parts.append(svg.ranked_bars([(k, top[k], r.drifted) for k, r in segments.items()],
                                 title=f"strongest column drift per value of {column}, relative to its threshold "
                                       "(1.0 = threshold)"))
    rows = ["<tr><th>segment</th><th>rows</th><th>verdict</th><th>drifted columns</th><th>rule</th></tr>"]
    for k, r in sorted(segments.items(), key=lambda kv: (not kv[1].drifted, -kv[1].n_current)):
        verdict = segment_verdict(r)
        cls = ' class="bad"' if r.drifted else ""
        drifted = ", ".join(f.name for f in r.drifted_features) or "-"
        rows.append(f'<tr class="segment" data-segment="{escape(k)}" data-drifted="{str(r.drifted).lower()}">'
                    f"<td>{escape(k)}</td><td>{r.n_current:,}</td><td{cls}>{escape(verdict)}</td>"
                    f"<td>{escape(drifted)}</td><td>{escape(r.rule)}</td></tr>")
    parts.append("<table>" + "".join(rows) + "</table></section>")
    return "".join(parts)


def render_html_report(report: "DriftReport", *, history: list[dict[str, Any]] | None = None,
                       performance: list[dict[str, Any]] | None = None,
                       quality: "QualityReport | None" = None, title: str | None = None,
                       segments: dict[str, "DriftReport"] | None = None, segment_column: str | None = None) -> str:
    """The report as one HTML string.

    ``history``: earlier windows, oldest first, each ``{"label": str, "metrics": {name: value}}``
    (flat metrics, see :mod:`loopml.monitor.metrics`); ``performance``: rows of
    :func:`loopml.monitor.labels.performance` with a ``window_start``; ``segments``: one
    drift report per value of ``segment_column`` (see
    :func:`loopml.monitor.segments.compute_segment_drift`).
    """
    name = f"{report.model or 'model'}" + (f" v{report.version}" if report.version else "")
    title = title or f"loopml monitoring report: {name}"
    w = report.window
    parts = [f"<h1>{escape(title)}</h1>",
             f'<p class="muted">generated {time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())}; window: '
             f'{_fmt(w.get("rows", report.n_current))} rows {escape(str(w.get("start", "")))[:19]} .. '
             f'{escape(str(w.get("end", "")))[:19]}{_served(w)}; reference: {report.n_reference:,} rows'
             f'{" (training data of v" + escape(str(report.version)) + ")" if report.version else ""}</p>',
             f'<p class="verdict {_VERDICT_CLASS[report.verdict]}" data-verdict="{report.verdict}">'
             f'{_VERDICT_TEXT[report.verdict]}</p>',
             f"<p>Decided by <b>{escape(report.decided_by)}</b>: {escape(report.rule)}.</p>"]
    checked = [f for f in report.features if f.ok]
    parts.append("<h2>Drift scores, ranked</h2>")
    parts.append(svg.ranked_bars([(f.name, drift_score(f), f.drifted) for f in checked],
                                 title="statistic relative to its threshold (1.0 = threshold)"))
    parts.append(_feature_table(report))
    if report.outputs is not None and report.outputs.features:
        parts.append("<h2>Prediction drift</h2>" + _feature_table(report.outputs))
    plotted = checked + ([f for f in report.outputs.features if f.ok] if report.outputs is not None else [])
    parts.append("<h2>Reference vs current, per column</h2><div class='grid'>")
    parts.extend(svg.histogram(f.name, f.bins, f.reference_counts, f.current_counts) for f in plotted if f.bins)
    parts.append("</div>")
    if segment_column is not None:
        parts.append(_segment_section(segment_column, segments or {}))
    if history:
        xs = [h["label"] for h in history]
        parts.append("<h2>Metrics over time</h2>")
        share = [h["metrics"].get("drift.share") for h in history]
        parts.append(svg.lines("share of drifted columns per window", xs, {"drift share": share}))
        volume = [h["metrics"].get("quality.volume_ratio") for h in history]
        if any(v is not None for v in volume):
            parts.append(svg.lines("rows per window over the expected rows (1.0 = as expected)", xs,
                                   {"volume ratio": volume}))
        top = most_drifted(report, history, MAX_HISTORY_SERIES)
        if top:
            series = {name: [h["metrics"].get(f"drift.feature.{name}") for h in history] for name in top}
            parts.append(svg.lines("drift statistic per column per window", xs, series))
    if performance:
        xs = [str(r.get("window_start", i))[:16] for i, r in enumerate(performance)]
        keys = [k for k in ("roc_auc", "accuracy", "f1", "recall", "precision", "mae", "rmse", "r2")
                if any(k in r for r in performance)]
        parts.append("<h2>Live metrics (labelled predictions)</h2>")
        parts.append(svg.lines("metrics per window", xs, {k: [r.get(k) for r in performance] for k in keys}))
    if quality is not None:
        issues = [i for i in quality.issues if i != quality.volume_message]
        parts.append("<h2>Data quality</h2>")
        parts.append(f'<p class="volume" data-volume-status="{escape(quality.volume_status)}">'
                     f"{escape(quality.volume_message)}</p>")
        parts.append("<ul>" + "".join(f"<li>{escape(i)}</li>" for i in issues) + "</ul>" if issues
                     else "<p>No data quality issue in this window.</p>")
    if report.problems:
        parts.append("<h2>Columns not checked</h2><ul>" +
                     "".join(f"<li>{escape(f.name)}: {escape(f.status)}</li>" for f in report.problems) + "</ul>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(parts) + f"<script>{_JS}</script></body></html>")


def write_html_report(path: str | Path, report: "DriftReport", **kwargs: Any) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(render_html_report(report, **kwargs), encoding="utf-8")
    tmp.replace(p)
    return p
