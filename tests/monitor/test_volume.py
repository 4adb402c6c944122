"""Volume against the expected rate: history windows from the log, ratio, status, CLI, alerts."""

from __future__ import annotations

import json
import math
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from loopml.cli.monitor import app
from loopml.data.profile import build_profile
from loopml.monitor import service
from loopml.monitor.predlog import write_part
from loopml.monitor.quality import check_quality
from loopml.monitor.service import window_metrics
from loopml.monitor.windows import history_row_counts

from .conftest import make_frame

T0 = 1_700_000_000.0
runner = CliRunner()


def write_log(folder, ts, seed=0):
    df = make_frame(len(ts), seed=seed)
    recs = [{"request_id": f"{seed}-{i}", "ts": float(t), "model": "m", "version": "1", "variant": "main",
             "inputs": row, "outputs": {"prediction": 0, "proba": 0.1}}
            for i, (t, row) in enumerate(zip(ts, df.to_dict(orient="records")))]
    write_part(folder, recs)


def window_frame(ts, seed=5):
    df = make_frame(len(ts), seed=seed)
    out = pd.DataFrame({"request_id": [f"w{i}" for i in range(len(ts))],
                        "ts": pd.to_datetime(np.asarray(ts), unit="s", utc=True),
                        "model": "m", "version": "1", "variant": "main"})
    for c in df.columns:
        out["in." + c] = df[c].to_numpy()
    out["out.prediction"], out["out.proba"] = 0, 0.1
    return out


@pytest.fixture
def steady(tmp_path):
    """One row per second for 10,000 s from T0."""
    root = tmp_path / "predictions"
    write_log(root / "m", T0 + np.arange(10_000))
    return root


@pytest.fixture
def reference():
    return build_profile(make_frame(3000, seed=1))


def test_history_counts_are_the_equal_windows_before(steady):
    counts = history_row_counts(steady, "m", T0 + 9000, T0 + 10_000, windows=12)
    assert counts == [1000] * 9  # only 9 whole windows fit after the log's first row
    assert history_row_counts(steady, "m", T0 + 2500, T0 + 3500) == [1000, 1000]
    assert history_row_counts(steady, "m", T0 + 9000, T0 + 10_000, windows=3) == [1000] * 3
    assert history_row_counts(steady, "m", T0, T0 + 1000) == []  # nothing before the first row
    assert history_row_counts(steady, "nosuch", T0 + 9000, T0 + 10_000) == []


def test_gaps_count_as_empty_windows(tmp_path):
    root = tmp_path / "predictions"
    # 500 rows per 1,000 s, then silence, then the window
    write_log(root / "m", T0 + np.arange(0, 3000, 2.0))
    counts = history_row_counts(root, "m", T0 + 6000, T0 + 7000)
    assert counts == [0, 0, 0, 500, 500, 500]


def test_low_volume_window(steady, reference):
    ts = np.linspace(T0 + 10_000, T0 + 10_990, 120)
    m = SimpleNamespace(name="m", version="1")
    _, q, metrics = window_metrics(reference, window_frame(ts), version=m, log_root=steady,
                                   span=(T0 + 10_000, T0 + 11_000))
    assert q.expected_rows == 1000 and q.volume_history == 10
    assert q.volume_status == "low"
    assert metrics["quality.volume_ratio"] == pytest.approx(0.12)
    assert q.volume_message.startswith("volume low: 120 rows vs ~1,000 expected (median of 10 earlier")
    assert q.issues[0] == q.volume_message and not q.ok
    assert q.to_dict()["volume_status"] == "low"


def test_steady_and_high_volume(steady, reference):
    m = SimpleNamespace(name="m", version="1")
    # the log's own last 1,000 s: as expected (span from the window's first to last row)
    window = window_frame(T0 + np.arange(9000, 10_000))
    _, q, metrics = window_metrics(reference, window, version=m, log_root=steady)
    assert q.volume_status == "ok" and 0.95 < metrics["quality.volume_ratio"] < 1.05
    assert not any(i.startswith("volume") for i in q.issues)
    busy = window_frame(np.linspace(T0 + 10_000, T0 + 10_999, 3000))
    _, q, _ = window_metrics(reference, busy, version=m, log_root=steady, span=(T0 + 10_000, T0 + 11_000))
    assert q.volume_status == "high" and q.volume_ratio == pytest.approx(3.0)
    assert "volume high: 3,000 rows vs ~1,000 expected" in q.issues[0]


def test_insufficient_history_is_said_never_nan(tmp_path, reference):
    root = tmp_path / "predictions"
    ts = T0 + np.arange(500)
    write_log(root / "m", ts)  # the log is only this window
    _, q, metrics = window_metrics(reference, window_frame(ts), log_root=root)  # model from the frame
    assert q.volume_status == "insufficient history" and q.volume_history == 0
    assert q.volume_ratio is None and "quality.volume_ratio" not in metrics
    assert "insufficient history" in q.volume_message and "volume" not in " ".join(q.issues)
    d = q.to_dict()
    json.dumps(d, allow_nan=False)  # no NaN anywhere
    assert d["volume_ratio"] is None and d["volume_status"] == "insufficient history"
    assert all(math.isfinite(v) for v in metrics.values())
    # one row (no span): also insufficient, not a crash
    _, q1, _ = window_metrics(reference, window_frame(ts[:1]), log_root=root)
    assert q1.volume_status == "insufficient history"
    # no log root given: nothing looked up, said as such
    q2 = check_quality(reference, window_frame(ts))
    assert q2.volume_status == "unknown" and q2.volume_ratio is None


@pytest.fixture
def quiet_ws(tmp_path, monkeypatch):
    """Rows every 3 s from 5 h ago to 1 h ago, then only 120 rows in the last hour."""
    home = tmp_path / "ws"
    monkeypatch.setenv("LOOPML_HOME", str(home))
    ref = build_profile(make_frame(4000, seed=1))
    monkeypatch.setattr(service, "champion_reference",
                        lambda ws, model: (SimpleNamespace(name="m", version="3"), ref))
    now = time.time()
    folder = home / "predictions" / "m"
    write_log(folder, now - 5 * 3600 + np.arange(0, 4 * 3600, 3.0), seed=2)
    write_log(folder, now - 3600 + 15 + np.arange(120) * 29.0, seed=3)
    return home


def test_drift_command_reports_low_volume(quiet_ws, tmp_path):
    res = runner.invoke(app, ["drift", "-m", "m", "--since", "1h", "--json", "--project", str(tmp_path)])
    assert res.exit_code == 0, res.output
    q = json.loads(res.output)["quality"]
    assert q["rows"] == 120 and q["volume_status"] == "low" and q["volume_history"] == 4
    assert 1190 <= q["expected_rows"] <= 1210 and 0.09 < q["volume_ratio"] < 0.11
    res = runner.invoke(app, ["drift", "-m", "m", "--since", "1h", "--project", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "volume low: 120 rows vs ~1,2" in " ".join(res.output.split())


def test_volume_alert_rule_fires(quiet_ws, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("alerts:\n  - {name: LowTraffic, metric: quality.volume_ratio, op: '<', threshold: 0.5}\n")
    # the last 120 rows took ~58 min; an equal window before them held ~1,160 rows
    res = runner.invoke(app, ["alerts", "--check", "-m", "m", "-w", "120", "--json", "--rules", str(rules),
                              "--project", str(tmp_path)])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output[res.output.index("{"):])
    assert {a["rule"]: a["status"] for a in d["alerts"]} == {"LowTraffic": "firing"}
    assert 0.05 < d["alerts"][0]["value"] < 0.2
