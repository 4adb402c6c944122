"""``loopml monitor`` commands over a real Parquet log (registry lookup stubbed)."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from loopml.cli.monitor import app
from loopml.data.profile import build_profile
from loopml.monitor import service
from loopml.monitor.predlog import write_part

from .conftest import make_frame

runner = CliRunner()


def log_rows(df, t0, model="m", version="1", variant="main"):
    recs = []
    for i, row in enumerate(df.to_dict(orient="records")):
        recs.append({"request_id": f"{t0}-{i}", "ts": t0 + i * 0.5, "model": model, "version": version,
                     "variant": variant, "inputs": row,
                     "outputs": {"prediction": int(i % 7 == 0), "proba": 0.1}})
    return recs


@pytest.fixture
def ws(tmp_path, monkeypatch):
    home = tmp_path / "ws"
    monkeypatch.setenv("LOOPML_HOME", str(home))
    ref = build_profile(make_frame(4000, seed=1))
    version = SimpleNamespace(name="m", version="3")
    monkeypatch.setattr(service, "champion_reference", lambda ws, model: (version, ref))
    now = time.time()
    folder = home / "predictions" / "m"
    write_part(folder, log_rows(make_frame(1200, seed=2), now - 7200))
    write_part(folder, log_rows(make_frame(1200, seed=3, shift=0.5, new_category=True), now - 1200))
    return home


def test_drift_json_last_window_drifts(ws, tmp_path):
    res = runner.invoke(app, ["drift", "-m", "m", "--window", "1000", "--json", "--project", str(tmp_path)])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["drifted"] is True and d["version"] == "3"
    assert d["window"]["rows"] == 1000
    assert set(d["drifted_features"]) >= {"x0", "x1", "color"}
    color = next(f for f in d["features"] if f["name"] == "color")
    assert "zz" in color["unseen"]


def test_drift_since_until_selects_the_calm_period(ws, tmp_path):
    res = runner.invoke(app, ["drift", "-m", "m", "--since", "3h", "--until", "1h", "--json", "--project", str(tmp_path)])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["window"]["rows"] == 1200 and d["drifted"] is False


def test_drift_table_and_fail_flag(ws, tmp_path):
    res = runner.invoke(app, ["drift", "-m", "m", "-w", "800", "--project", str(tmp_path)])
    assert res.exit_code == 0
    assert "DRIFT DETECTED" in res.output and "Benjamini-Hochberg" in res.output
    res = runner.invoke(app, ["drift", "-m", "m", "-w", "800", "--fail-on-drift", "--project", str(tmp_path)])
    assert res.exit_code == 1


def test_drift_empty_window_is_a_clear_error(ws, tmp_path):
    from loopml.errors import MonitorError

    res = runner.invoke(app, ["drift", "-m", "m", "--since", "10s", "--until", "5s", "--project", str(tmp_path)])
    assert isinstance(res.exception, MonitorError)
    assert "no predictions logged for model 'm'" in str(res.exception)
