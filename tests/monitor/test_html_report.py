"""The HTML report is self-contained and renders its plots in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pandas as pd

from loopml.data.profile import build_profile
from loopml.monitor.drift import compute_drift
from loopml.monitor.html_report import render_html_report, write_html_report
from loopml.monitor.metrics import drift_metrics
from loopml.monitor.quality import check_quality
from loopml.monitor.segments import compute_prediction_drift, compute_segment_drift

from .conftest import make_frame, to_log


def build(tmp_path):
    ref_df = make_frame(3000, seed=1).assign(label=(np.arange(3000) % 10 == 0).astype(int))
    ref = build_profile(ref_df)
    cur = to_log(make_frame(1000, seed=2, shift=0.5, new_category=True))
    report = compute_drift(ref, cur)
    report.outputs = compute_prediction_drift(ref, cur, target="label")
    report.model, report.version = "fraud<&>", "2"
    history = [{"label": f"w{i}", "metrics": drift_metrics(compute_drift(ref, make_frame(500, seed=10 + i, shift=i / 10)))}
               for i in range(5)]
    perf = [{"window_start": f"2026-01-0{i + 1}", "roc_auc": 0.8 - i / 50, "f1": 0.5} for i in range(4)]
    quality = check_quality(ref, cur, expected_rows=4000.0, volume_history=12, window_seconds=600.0)
    # segments of "flag": the shifted window drifts in both; a tiny third segment cannot be checked
    seg_cur = cur.copy()
    seg_cur["in.flag"] = seg_cur["in.flag"].astype(str)
    seg_cur.loc[seg_cur.index[:3], "in.flag"] = "tiny"
    segments = compute_segment_drift(ref, seg_cur, "flag")
    path = write_html_report(tmp_path / "r" / "report.html", report, history=history, performance=perf,
                             quality=quality, segments=segments, segment_column="flag")
    return report, path


def test_report_is_self_contained(tmp_path):
    report, path = build(tmp_path)
    html = path.read_text()
    assert "DRIFT DETECTED" in html and "Benjamini-Hochberg" in html
    assert "fraud&lt;&amp;&gt;" in html and "fraud<&>" not in html  # names are escaped
    # no network: no external scripts, styles, images or fonts
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', html)
    assert "@import" not in html
    n_checked = len([f for f in report.features if f.ok]) + len(report.outputs.features)
    assert html.count('data-plot="histogram"') == n_checked
    assert html.count('data-plot="ranking"') == 2 and html.count('data-plot="timeseries"') == 3
    assert "zz" in html  # the unseen category is named
    assert "color: 200 values in unseen categories" in html  # quality section
    assert "volume low: 1,000 rows vs ~4,000 expected (median of 12 earlier 10m windows, ratio 0.25)" in html


def test_segment_section_verdicts():
    ref = build_profile(make_frame(3000, seed=1))
    cur = to_log(make_frame(2000, seed=2))
    hit = (cur["in.color"] == "a").to_numpy()
    cur.loc[hit, "in.x2"] = cur.loc[hit, "in.x2"] + 5.0
    cur.loc[cur.index[:2], "in.color"] = "rare"
    segments = compute_segment_drift(ref, cur, "color")
    html = render_html_report(compute_drift(ref, cur), segments=segments, segment_column="color")
    section = html[html.index('<section id="segments"'):html.index("</section>")]
    rows = dict(re.findall(r'data-segment="([^"]+)" data-drifted="(true|false)"', section))
    assert rows == {"a": "true", "b": "false", "c": "false", "d": "false", "rare": "false"}
    assert "not checked: insufficient data" in section  # the 2-row segment says why, not "no drift"
    assert section.count('data-plot="ranking"') == 1
    # the drifted segment names its drifted column
    a_row = section[section.index('data-segment="a"'):].split("</tr>")[0]
    assert "DRIFT" in a_row and "x2" in a_row
    # no --segment: no section
    assert 'id="segments"' not in render_html_report(compute_drift(ref, cur))


def test_empty_report_renders_without_plots():
    ref = build_profile(make_frame(100, seed=1))
    html = render_html_report(compute_drift(ref, make_frame(0, seed=2)))
    # nothing could be checked: the verdict says so, never "NO DRIFT"
    assert "COULD NOT DECIDE" in html and "no column could be checked" in html
    assert "NO DRIFT" not in html
    assert 'data-plot="histogram"' not in html


def test_report_renders_in_headless_chromium(tmp_path):
    _, path = build(tmp_path)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "install Chromium: apt-get install -y chromium"
    out = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=3000", "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    dom = out.stdout
    assert "<svg" in dom, out.stderr[-2000:]
    expected = len(re.findall(r'class="plot"', path.read_text()))
    m = re.search(r'data-plots-rendered="(\d+)"', dom)
    assert m, "the page's script did not run"
    assert int(m.group(1)) == expected > 10
    # the segment section rendered: its rows are in the live DOM and its chart laid out
    section = dom[dom.index('<section id="segments"'):]
    section = section[:section.index("</section>")]
    assert len(re.findall(r'<tr class="segment"', section)) == 3
    assert re.search(r'data-segment="True" data-drifted="true"', section)
    assert 'data-plot="ranking"' in section
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile2'}",
         "--window-size=1200,2400", f"--screenshot={shot}", path.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_history_plots_the_most_drifted_columns_not_the_first_alphabetically():
    rng = np.random.default_rng(3)

    def frame(n, shift=0.0):
        calm = {f"a{i}": rng.normal(0, 1, n) for i in range(9)}  # sort before the drifting columns
        return pd.DataFrame({**calm, "y_moves": rng.normal(shift, 1, n), "z_moves": rng.normal(2 * shift, 1, n)})

    ref = build_profile(frame(3000))
    history = [{"label": f"w{i}", "metrics": drift_metrics(compute_drift(ref, frame(500, shift=0.3 + i / 5)))}
               for i in range(4)]
    html = render_html_report(compute_drift(ref, frame(500, shift=1.0)), history=history)
    plot = re.search(r'<svg[^>]*data-name="drift statistic per column per window".*?</svg>', html).group(0)
    plotted = re.findall(r"<title>([^<]+)</title>", plot)
    assert len(plotted) == 8
    assert plotted[:2] == ["z_moves", "y_moves"]  # ranked: the strongest drift first
    assert sum(name.startswith("a") for name in plotted) == 6  # 3 calm columns left out
