"""The controller's Alertmanager webhook (#11): a firing loopml drift alert for this project's
model becomes one retraining trigger, audited with the token's name; everything else is refused
(401 / 403 / 400) or ignored. Real HTTP on 127.0.0.1, the state store on SQLite."""

from __future__ import annotations

import httpx
import pytest

from loopml.errors import LoopmlError
from loopml.loop.controller import Controller
from loopml.loop.webhook import AlertWebhook, start_webhook, webhook_port
from loopml.registry import audit
from loopml.spec import load_spec
from loopml.store.tokens import TokenStore, Verifier
from tests.loop.test_controller import FakeServer


def alert(status="firing", name="LoopmlDriftDetected", model="fraud", fp="8f3c1a2b", starts="2026-11-23T22:00:00Z",
          source="loopml"):
    labels = {"alertname": name, "model": model, "severity": "warning", "source": source}
    return {"status": status, "labels": labels, "annotations": {}, "startsAt": starts,
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph", "fingerprint": fp}


def payload(*alerts):
    return {"version": "4", "groupKey": "{}:{alertname=\"x\"}", "status": "firing", "receiver": "loopml",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
            "truncatedAlerts": 0, "alerts": list(alerts)}


@pytest.fixture
def setup(workspace, tmp_path):
    from loopml.demo.project import scaffold_project

    project = scaffold_project(tmp_path / "proj", rows=200)
    spec = load_spec(project)
    said: list[str] = []
    ctl = Controller(spec, workspace, FakeServer(), project_dir=project, say=said.append)
    store = TokenStore(workspace.state_uri)
    tokens = {"deployer": store.create("alertmanager", "deployer"), "viewer": store.create("dashboard", "viewer")}
    hook = AlertWebhook(ctl, Verifier(workspace.state_uri, "boot", ttl=0)).start()
    yield ctl, hook, tokens
    hook.stop()


def post(hook, body, token=None, **kw):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    if isinstance(body, (dict, list)):
        return httpx.post(hook.url, json=body, headers=headers, timeout=30, **kw)
    return httpx.post(hook.url, content=body, headers=headers, timeout=30, **kw)


def test_a_firing_drift_alert_queues_one_trigger_audited_with_the_token_name(setup, workspace):
    ctl, hook, tokens = setup
    assert ctl.model == "fraud"
    r = post(hook, payload(alert()), tokens["deployer"])
    assert r.status_code == 200, r.text
    assert [t["status"] for t in r.json()["triggered"]] == ["queued"]
    [trig] = ctl.store.triggers("fraud")
    assert trig.kind == "drift" and trig.status == "queued" and "LoopmlDriftDetected" in trig.cause
    [rec] = [c for c in audit.read(workspace, "fraud") if c.action == "trigger"]
    assert rec.who == "alertmanager" and rec.evidence == {"trigger": trig.id}
    assert tokens["deployer"] not in workspace.audit_log.read_text()
    assert ctl.store.claim_trigger("fraud").id == trig.id  # the controller's own queue: retrain takes it


def test_a_repeated_firing_is_taken_once_even_by_a_restarted_listener(setup, workspace):
    ctl, hook, tokens = setup
    assert len(post(hook, payload(alert()), tokens["deployer"]).json()["triggered"]) == 1
    again = post(hook, payload(alert()), tokens["deployer"]).json()
    assert again == {"triggered": [], "duplicate": 1, "ignored": 0}
    other = AlertWebhook(ctl, Verifier(workspace.state_uri, ttl=0)).start()  # a restarted controller
    try:
        assert post(other, payload(alert()), tokens["deployer"]).json()["duplicate"] == 1
    finally:
        other.stop()
    assert len(ctl.store.triggers("fraud")) == 1
    # the same alert firing again after a resolve (new startsAt) is a new cause: recorded (merged by debounce)
    out = post(hook, payload(alert(starts="2026-11-23T23:00:00Z")), tokens["deployer"]).json()
    assert [t["status"] for t in out["triggered"]] == ["merged"]
    assert len(ctl.store.triggers("fraud")) == 2


def test_resolved_foreign_and_non_drift_alerts_are_ignored(setup):
    ctl, hook, tokens = setup
    body = payload(alert(status="resolved"), alert(model="churn", fp="a1"), alert(name="LoopmlLatencyHigh", fp="a2"),
                   alert(source="node-exporter", fp="a3"))
    assert post(hook, body, tokens["deployer"]).json() == {"triggered": [], "duplicate": 0, "ignored": 4}
    assert ctl.store.triggers("fraud") == []


def test_wrong_token_401_viewer_403_malformed_400(setup):
    ctl, hook, tokens = setup
    for token in (None, "nope", tokens["deployer"][:-2] + "xx"):
        r = post(hook, payload(alert()), token)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer") and "error" in r.json()
    r = post(hook, payload(alert()), tokens["viewer"])
    assert r.status_code == 403 and "needs the deployer role" in r.json()["error"] and "dashboard" in r.json()["error"]
    for bad in (b"{not json", b"[]", {"alerts": "x"}, {"alerts": [{"labels": {}}]}, {"alerts": [{"status": "firing"}]}):
        r = post(hook, bad, tokens["deployer"])
        assert r.status_code == 400 and "error" in r.json(), bad
    assert httpx.get(hook.url, headers={"authorization": f"Bearer {tokens['deployer']}"}).status_code == 405
    assert httpx.post(hook.url.replace("/alerts", "/other"), json={}).status_code == 404
    assert post(hook, payload(alert()), "boot").status_code == 200  # the bootstrap admin is allowed too
    assert len(ctl.store.triggers("fraud")) == 1


def test_the_listener_is_off_unless_a_port_is_configured(setup, monkeypatch):
    ctl = setup[0]
    monkeypatch.delenv("LOOPML_WEBHOOK_PORT", raising=False)
    assert webhook_port(ctl.spec) is None and start_webhook(ctl, None) is None
    monkeypatch.setenv("LOOPML_WEBHOOK_PORT", "http")
    with pytest.raises(LoopmlError, match="LOOPML_WEBHOOK_PORT"):
        webhook_port(ctl.spec)
    monkeypatch.setenv("LOOPML_WEBHOOK_PORT", "0")
    said: list[str] = []
    hook = start_webhook(ctl, "boot", say=said.append)
    try:
        assert hook.host == "127.0.0.1" and hook.port > 0 and hook.url in said[0]
        assert post(hook, payload(alert()), "boot").status_code == 200
    finally:
        hook.stop()
    monkeypatch.delenv("LOOPML_WEBHOOK_PORT")
    ctl.spec = ctl.spec.model_copy(update={"retrain": ctl.spec.retrain.model_copy(update={"webhook_port": 0})})
    assert webhook_port(ctl.spec) == 0


def test_loopml_up_listens_on_the_spec_port_and_queues_the_trigger(registered_model, project):
    """The real ``loopml up``: retrain.webhook_port from loopml.yaml, a deployer token, one trigger."""
    import json
    import os
    import signal
    import subprocess
    import sys

    import yaml

    from loopml.loop.server_process import ServerProcess
    from loopml.loop.state import StateStore
    from loopml.platform.base import free_port
    from tests.serve.helpers import wait_for

    ws, name = registered_model
    port = free_port()
    raw = yaml.safe_load((project / "loopml.yaml").read_text())
    raw["triggers"] = {"on_drift": False}
    raw.setdefault("retrain", {})["webhook_port"] = port
    (project / "loopml.yaml").write_text(yaml.safe_dump(raw))
    token = TokenStore(ws.state_uri).create("alertmanager", "deployer")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    env.update(LOOPML_HOME=str(ws.home), LOOPML_ADMIN_TOKEN="t0ken")
    out = project / "up.out"
    with open(out, "w") as fh:
        up = subprocess.Popen([sys.executable, "-m", "loopml.cli.main", "up", "-p", str(project)], env=env,
                              stdout=fh, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for(lambda: f"127.0.0.1:{port}/alerts" in out.read_text(), timeout=120), out.read_text()
        r = httpx.post(f"http://127.0.0.1:{port}/alerts", json=payload(alert(model=name)),
                       headers={"authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 200 and len(r.json()["triggered"]) == 1, r.text
        [trig] = [t for t in StateStore(ws.state_uri).triggers(name) if t.kind == "drift"]
        assert "LoopmlDriftDetected" in trig.cause
        assert token not in out.read_text() and token not in json.dumps(r.json())
    finally:
        up.send_signal(signal.SIGKILL)  # it may be retraining by now: no need to wait for that
        up.wait(30)
        left = ServerProcess.adopt(ws)
        if left is not None:
            left.stop()


def test_the_controllers_own_drift_gauges_are_on_get_metrics(setup):
    """On the platform the controller is the one process that reads every replica's log, so
    Prometheus scrapes its latest drift verdict from the listener (the alert comes back to
    POST /alerts); before any check there is nothing to report."""
    from loopml.monitor.metrics import publish_window_metrics

    ctl, hook, _ = setup
    metrics_url = hook.url.replace("/alerts", "/metrics")
    before = httpx.get(metrics_url, timeout=30)
    assert before.status_code == 200 and "loopml_drift_detected{" not in before.text
    publish_window_metrics(ctl.workspace, "fraud", "1", {"drift.detected": 1.0, "drift.share": 0.25})
    lines = [ln for ln in httpx.get(metrics_url, timeout=30).text.splitlines() if ln.startswith("loopml_drift_")]
    assert any(ln.startswith("loopml_drift_detected{") and 'model="fraud"' in ln and ln.endswith(" 1.0") for ln in lines)
    assert any(ln.startswith("loopml_drift_share{") and ln.endswith(" 0.25") for ln in lines), lines
