"""``loopml monitor`` commands over a real Parquet log (registry lookup stubbed)."""

from __future__ import annotations

import json
import re
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


def test_drift_that_cannot_decide_exits_3_and_says_so(ws, tmp_path):
    # 10 rows: every column is under its minimum, so no column could be checked
    res = runner.invoke(app, ["drift", "-m", "m", "-w", "10", "--project", str(tmp_path)])
    assert res.exit_code == 3, res.output
    text = " ".join(res.output.split())
    assert "COULD NOT DECIDE" in text and "no column could be checked" in text
    assert "NO DRIFT" not in text
    res = runner.invoke(app, ["drift", "-m", "m", "-w", "10", "--json", "--project", str(tmp_path)])
    assert res.exit_code == 3 and json.loads(res.output)["verdict"] == "could not decide"
    # --fail-on-drift does not turn "could not decide" into "drift" (1) or "no drift" (0)
    res = runner.invoke(app, ["drift", "-m", "m", "-w", "10", "--fail-on-drift", "--project", str(tmp_path)])
    assert res.exit_code == 3


def test_drift_exit_codes_are_in_the_help():
    res = runner.invoke(app, ["drift", "--help"])
    text = " ".join(res.output.split())
    for words in ("0 no drift", "1 drift with --fail-on-drift", "2 bad input", "3 could not decide"):
        assert words in text, text


def test_report_command_says_it_could_not_decide(ws, tmp_path):
    out = tmp_path / "report.html"
    res = runner.invoke(app, ["report", "-m", "m", "--out", str(out), "-w", "10", "--project", str(tmp_path)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "(could not decide;" in text and "no drift" not in text
    html = out.read_text()
    assert "COULD NOT DECIDE" in html and "NO DRIFT" not in html


def test_drift_empty_window_is_a_clear_error(ws, tmp_path):
    from loopml.errors import MonitorError

    res = runner.invoke(app, ["drift", "-m", "m", "--since", "10s", "--until", "5s", "--project", str(tmp_path)])
    assert isinstance(res.exception, MonitorError)
    # the log has rows, just not then: say where they are instead of "send traffic first"
    assert "no predictions of 'm' in " in str(res.exception)
    assert "its log holds 2,400 rows from" in str(res.exception)


def run_main(monkeypatch, capsys, *args):
    """``loopml ARGS`` through the real entry point: ``(exit code, stdout, stderr)``."""
    from loopml.cli.main import main

    monkeypatch.setattr("sys.argv", ["loopml", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.mark.parametrize("args, words", [
    (["drift", "-m", "m", "--window", "0"], "at least 1 row"),
    (["drift", "-m", "m", "--window", "-5"], "at least 1 row"),
    (["drift", "-m", "m", "--since", "garbage"], "'garbage' is not a time"),
    (["drift", "-m", "m", "--since", "1h", "--until", "2h"], "must be after --since"),
    (["drift", "-m", "m", "--segment", "nosuch"], "segment column 'nosuch' is not in the window"),
    (["report", "-m", "m", "--every", "xx"], "'xx' is not a duration"),
    (["report", "-m", "m", "--history", "-1"], "--history must be 0 or more"),
    (["labels", "nosuch.csv", "-m", "m"], "cannot read labels"),
    (["alerts", "--check"], "--check needs --model"),
])
def test_bad_arguments_give_one_line_and_exit_2(ws, tmp_path, monkeypatch, capsys, args, words):
    code, out, err = run_main(monkeypatch, capsys, "monitor", *args, "--project", str(tmp_path))
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and words in err, err


def test_labels_on_an_id_column_not_logged_ingests_nothing(ws, tmp_path, monkeypatch, capsys):
    import pandas as pd

    f = tmp_path / "truth.csv"
    pd.DataFrame({"transaction_id": ["t1", "t2"], "label": [0, 1]}).to_csv(f, index=False)
    code, _, err = run_main(monkeypatch, capsys, "monitor", "labels", str(f), "-m", "m",
                            "--id-column", "transaction_id", "--project", str(tmp_path))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "has no input 'transaction_id'" in err and "x0" in err  # names the inputs that were logged
    assert not (ws / "labels" / "m").exists()  # nothing was ingested


def test_alerts_without_rules_says_so(ws, tmp_path):
    res = runner.invoke(app, ["alerts", "--project", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "no alert rules" in res.output and "no open alerts" in res.output


def test_labels_command(ws, tmp_path):
    import pandas as pd

    from loopml.monitor.predlog import read_predictions

    log = read_predictions(ws / "predictions", "m")
    truth = pd.DataFrame({"request_id": log["request_id"], "label": log["out.prediction"]})
    f = tmp_path / "truth.csv"
    truth.to_csv(f, index=False)
    res = runner.invoke(app, ["labels", str(f), "-m", "m", "--json", "--project", str(tmp_path)])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["ingested"] == 2400 and d["matched"] == 2400
    assert d["metrics"][0]["accuracy"] == 1.0 and d["metrics"][0]["version"] == "1"


def test_report_command_writes_html(ws, tmp_path):
    out = tmp_path / "report.html"
    res = runner.invoke(app, ["report", "-m", "m", "--out", str(out), "-w", "600", "--project", str(tmp_path)])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert "DRIFT DETECTED" in html and html.count('data-plot="timeseries"') >= 2
    assert "4 windows over time" in res.output
    assert 'id="segments"' not in html


def test_report_command_with_segments(ws, tmp_path):
    out = tmp_path / "report.html"
    res = runner.invoke(app, ["report", "-m", "m", "--out", str(out), "-w", "1000", "--segment", "color",
                              "--project", str(tmp_path)])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert '<section id="segments" data-segment-column="color">' in html
    segs = dict(re.findall(r'data-segment="([^"]+)" data-drifted="(true|false)"', html))
    # the drifted window: x0/x1 shifted in every segment; the unseen category is its own segment
    assert set(segs) == {"a", "b", "c", "d", "zz"} and segs["a"] == "true"
    assert "segments of color drifted" in " ".join(res.output.split())
    # the volume line of the quality section: the ws log has history before this window
    assert 'data-volume-status="' in html and 'data-volume-status="unknown"' not in html
    assert "served by v1 (1,000); reference: 4,000 rows (training data of v3)" in html


def test_drift_table_names_served_versions(ws, tmp_path):
    res = runner.invoke(app, ["drift", "-m", "m", "-w", "800", "--project", str(tmp_path)])
    text = " ".join(res.output.split())
    assert "800 logged rows of 'm'" in text and "served by v1" in text
    assert "training reference of v3 (4,000 rows)" in text


def test_alerts_command_check_list_and_export(ws, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("alerts:\n  - {name: InputDrift, metric: drift.detected, threshold: 1, for_windows: 1}\n"
                     "  - {name: ColorUnseen, metric: quality.unseen_rate.color, threshold: 0.02}\n")
    args = ["--rules", str(rules), "--project", str(tmp_path)]
    res = runner.invoke(app, ["alerts", "--check", "-m", "m", "-w", "1000", *args])
    assert res.exit_code == 0, res.output
    assert "[FIRING] InputDrift on m" in res.output and "[FIRING] ColorUnseen on m" in res.output
    # checking the same window again does not notify twice
    res = runner.invoke(app, ["alerts", "--check", "-m", "m", "-w", "1000", "--json", *args])
    d = json.loads(res.output)
    assert {a["rule"]: a["status"] for a in d["alerts"]} == {"InputDrift": "firing", "ColorUnseen": "firing"}
    assert len(d["events"]) == 2 and all(e["delivered"] for e in d["events"])
    assert (ws / "alerts.jsonl").read_text().count("firing") == 2
    prom = tmp_path / "rules.prom.yaml"
    res = runner.invoke(app, ["alerts", "--export-prometheus", str(prom), *args])
    assert res.exit_code == 0 and "loopml_drift_detected >= 1" in prom.read_text()
