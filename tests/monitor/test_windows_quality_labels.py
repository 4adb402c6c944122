from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loopml.data.profile import build_profile
from loopml.errors import MonitorError
from loopml.monitor.labels import ingest_labels, performance, read_labelled, task_metrics
from loopml.monitor.metrics import MonitorCollector, drift_gauge_samples, gauge_samples, quality_metrics
from loopml.monitor.predlog import read_predictions, write_part
from loopml.monitor.quality import check_quality
from loopml.monitor.windows import count_windows, iter_windows, log_extent, parse_duration, parse_time, time_windows

from .conftest import make_frame

T0 = 1_700_000_000.0


def write_log(root, n=600, version="1", variant="main", t0=T0, step=10.0, seed=0):
    rng = np.random.default_rng(seed)
    recs = [{"request_id": f"{version}-{variant}-{i}", "ts": t0 + i * step, "model": "m", "version": version,
             "variant": variant, "inputs": {"x": float(rng.normal()), "cust": f"c{i}"},
             "outputs": {"prediction": int(i % 3 == 0), "proba": 0.9 if i % 3 == 0 else 0.1}} for i in range(n)]
    write_part(root / "m", recs)


def test_durations_and_times():
    assert parse_duration("15m") == 900 and parse_duration("1.5h") == 5400
    assert parse_time("2h", now=10_000.0) == 2800.0
    assert parse_time("2023-11-14T22:13:20Z") == T0
    assert parse_time(str(T0)) == T0
    with pytest.raises(MonitorError, match="duration"):
        parse_duration("soon")
    with pytest.raises(MonitorError, match="not a time"):
        parse_time("yesterday-ish")


def test_time_and_count_windows():
    tumbling = time_windows(0, 3600, 900)
    assert [(w.start, w.end) for w in tumbling] == [(0, 900), (900, 1800), (1800, 2700), (2700, 3600)]
    sliding = time_windows(0, 3600, 1800, 900)
    assert [(w.start, w.end) for w in sliding] == [(0, 1800), (900, 2700), (1800, 3600)]
    assert [(w.offset, w.rows) for w in count_windows(1000, 300)] == [(100, 300), (400, 300), (700, 300)]
    assert [(w.offset, w.rows) for w in count_windows(1000, 400, 200)] == [(0, 400), (200, 400), (400, 400), (600, 400)]
    assert [(w.offset, w.rows) for w in count_windows(50, 300)] == [(0, 50)]


def test_iter_windows_reads_each_window_only(tmp_path):
    write_log(tmp_path, n=600, step=10.0)  # 6000 s of traffic
    lo, hi, n = log_extent(tmp_path, "m")
    assert (lo, hi, n) == (T0, T0 + 5990, 600)
    by_time = list(iter_windows(tmp_path, "m", size="30m"))
    assert [len(df) for _, df in by_time] == [180, 180, 180]
    assert all(df["ts"].is_monotonic_increasing for _, df in by_time)
    by_rows = list(iter_windows(tmp_path, "m", size=250))
    assert [len(df) for _, df in by_rows] == [250, 250]
    assert by_rows[-1][1]["request_id"].iloc[-1] == "1-main-599"
    # since/until window through read_predictions (TIMESTAMPTZ_NS in the Parquet files)
    assert len(read_predictions(tmp_path, "m", since=T0 + 100, until=T0 + 200)) == 10
    assert list(iter_windows(tmp_path, "nothing", size="1h")) == []


def test_quality_per_window():
    ref = build_profile(make_frame(2000, seed=1))
    cur = make_frame(400, seed=2, new_category=True)
    cur.loc[cur.index[:100], "x0"] = np.nan
    cur.loc[cur.index[100:110], "x2"] = 1e6
    cur = cur.astype({"n_items": object})
    cur.loc[cur.index[:5], "n_items"] = "five"
    q = check_quality(ref, cur.drop(columns=["flag"]), features=["x0", "x2", "n_items", "color", "flag"],
                      expected_rows=1000)
    by = {c.name: c for c in q.columns}
    assert by["x0"].missing == 100 and by["x0"].missing_rate == 0.25
    assert by["x2"].out_of_range == 10
    assert by["n_items"].type_violations == 5
    assert by["color"].unseen == 80 and by["color"].unseen_values == {"zz": 80}
    assert not by["flag"].present
    issues = " | ".join(q.issues)
    assert "volume low: 400 rows vs ~1,000 expected (ratio 0.40)" in issues and "flag: column missing" in issues
    assert "x0: missing rate 25.0%" in issues
    m = quality_metrics(q)
    assert m["quality.volume_ratio"] == 0.4 and m["quality.missing_rate.x0"] == 0.25
    assert m["quality.unseen_rate.color"] == 0.2
    assert check_quality(ref, make_frame(400, seed=3), expected_rows=420).ok


def test_labels_join_by_request_id_and_id_column(tmp_path):
    preds, labs = tmp_path / "predictions", tmp_path / "labels" / "m"
    write_log(preds, n=300, version="1", variant="main")
    write_log(preds, n=300, version="2", variant="canary", t0=T0 + 5, seed=1)
    truth = pd.DataFrame({"request_id": [f"1-main-{i}" for i in range(300)] + [f"2-canary-{i}" for i in range(300)],
                          "label": [int(i % 3 == 0) for i in range(300)] + [int(i % 2 == 0) for i in range(300)]})
    _, n = ingest_labels(labs, truth)
    assert n == 600
    joined = read_labelled(preds, labs, "m")
    assert len(joined) == 600
    rows = performance(joined, "classification")
    by = {(r["version"], r["variant"]): r for r in rows}
    assert by[("1", "main")]["accuracy"] == 1.0 and by[("1", "main")]["roc_auc"] == 1.0
    assert by[("2", "canary")]["accuracy"] == pytest.approx(np.mean([(i % 3 == 0) == (i % 2 == 0) for i in range(300)]))
    # a later correction wins; event-time windows keep the prediction's time
    ingest_labels(labs, pd.DataFrame({"request_id": ["1-main-1"], "label": [1]}))
    joined = read_labelled(preds, labs, "m")
    assert joined.loc[joined["request_id"] == "1-main-1", "label"].item() == 1
    per_window = performance(joined, "classification", every="1000s", by=("version",))
    assert sum(r["count"] for r in per_window) == 600 and len(per_window) == 6
    # join on an input id column
    by_cust = pd.DataFrame({"cust": ["c0", "c1"], "y": [1, 0]})
    labs2 = tmp_path / "labels2"
    ingest_labels(labs2, by_cust, id_column="cust", label_column="y")
    assert len(read_labelled(preds, labs2, "m", id_column="cust")) == 4  # c0, c1 in both versions
    with pytest.raises(MonitorError, match="no column 'label'"):
        ingest_labels(labs2, by_cust, id_column="cust")


def test_regression_metrics():
    m = task_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]), None, "regression")
    assert m["mae"] == pytest.approx(2 / 3) and m["rmse"] == pytest.approx(np.sqrt(4 / 3))
    assert m["r2"] == pytest.approx(1 - 4 / 2)


def test_gauge_samples_and_collector():
    from prometheus_client import CollectorRegistry, generate_latest

    from loopml.monitor.drift import compute_drift

    ref = build_profile(make_frame(2000, seed=1))
    report = compute_drift(ref, make_frame(800, seed=2, shift=0.6))
    samples = drift_gauge_samples("fraud", report)
    names = {(n, lab.get("feature")) for n, lab, _ in samples}
    assert ("loopml_drift_detected", None) in names and ("loopml_drift_score", "x0") in names
    assert dict(((n, lab.get("feature")), v) for n, lab, v in samples)[("loopml_drift_feature_drifted", "x0")] == 1.0
    reg = CollectorRegistry()
    col = MonitorCollector()
    reg.register(col)
    col.update("fraud", samples + gauge_samples("fraud", {"performance.roc_auc": 0.81}))
    text = generate_latest(reg).decode()
    assert 'loopml_drift_detected{model="fraud",window="latest"} 1.0' in text
    assert 'loopml_live_metric{metric="roc_auc",model="fraud",window="latest"} 0.81' in text
