"""Alerting through the real stack into loopml (#11): a drift gauge on a loopml /metrics page ->
the platform's Prometheus (its loopml rule fires) -> Alertmanager (bearer token from its
credentials_file) -> the controller's webhook (:mod:`loopml.loop.webhook`) -> a retraining
trigger in the controller's state store, audited with the token's name. Prints the time it took
(the figure in docs/platform.md)."""

from __future__ import annotations

import time

from loopml.loop.controller import Controller
from loopml.loop.webhook import AlertWebhook
from loopml.registry import audit
from loopml.spec import load_spec
from loopml.store.tokens import TokenStore, Verifier
from tests.loop.test_controller import FakeServer

MODEL = "fraud-webhook"  # a model of its own: no other test's alert can be the one that arrives


def test_a_drift_gauge_becomes_a_controller_trigger_through_prometheus_and_alertmanager(local_platform, workspace,
                                                                                       tmp_path):
    from prometheus_client import CollectorRegistry, start_http_server

    from loopml.demo.project import scaffold_project
    from loopml.monitor.metrics import MonitorCollector, gauge_samples

    plat = local_platform
    spec = load_spec(scaffold_project(tmp_path / "proj", rows=200))
    spec = spec.model_copy(update={"name": MODEL})
    said: list[str] = []
    ctl = Controller(spec, workspace, FakeServer(), project_dir=tmp_path / "proj", say=said.append)
    token = TokenStore(workspace.state_uri).create("alertmanager", "deployer")
    token_file = tmp_path / "alertmanager.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    hook = AlertWebhook(ctl, Verifier(workspace.state_uri)).start()

    registry, collector = CollectorRegistry(), MonitorCollector()
    registry.register(collector)
    collector.update(MODEL, gauge_samples(MODEL, {"drift.detected": 1.0, "drift.share": 0.25}))
    metrics_server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    target = plat.root / "prometheus" / "targets" / "test-trigger.json"
    try:
        plat.set_alert_webhook(hook.url, token_file)
        t0 = time.monotonic()
        plat.add_scrape_targets("test-trigger", [f"127.0.0.1:{metrics_server.server_address[1]}"])
        deadline = t0 + 240
        triggers = []
        while time.monotonic() < deadline and not triggers:
            triggers = [t for t in ctl.store.triggers(MODEL) if t.kind == "drift"]
            time.sleep(0.2)
        assert triggers, f"no trigger recorded; the controller said {said}"
        print(f"drift gauge -> Prometheus -> Alertmanager -> loopml webhook -> controller trigger: "
              f"{time.monotonic() - t0:.1f} s")
        [trig] = triggers  # Alertmanager's repeats of the same firing are taken once
        assert trig.status == "queued" and "LoopmlDriftDetected" in trig.cause
        [rec] = [c for c in audit.read(workspace, MODEL) if c.action == "trigger"]
        assert rec.who == "alertmanager" and rec.evidence == {"trigger": trig.id}
        assert token not in workspace.audit_log.read_text()
        assert token not in (plat.root / "alertmanager" / "alertmanager.yml").read_text()
    finally:
        target.unlink(missing_ok=True)
        plat.set_alert_webhook(None)
        hook.stop()
        metrics_server.shutdown()
