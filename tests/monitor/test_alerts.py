"""Alert rules: for N windows, cooldown, dedup, persistence in the state store (SQLite and
PostgreSQL), webhook + log delivery."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import yaml

from loopml.errors import SpecError
from loopml.monitor.alert_delivery import deliver_pending
from loopml.monitor.alert_store import AlertStore
from loopml.monitor.alerts import AlertEvent, AlertRule, AlertState, evaluate, parse_rules
from loopml.monitor.prom_rules import prometheus_rules
from tests.store.backends import state_uri  # noqa: F401 - fixture: SQLite and PostgreSQL

HOUR = 3600.0


class Hook:
    """A real HTTP server on 127.0.0.1 recording the JSON bodies it receives."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict] = []
        self.status = status
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.bodies.append(json.loads(body))
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def rule(**kw) -> AlertRule:
    base = dict(name="drift", metric="drift.detected", threshold=1, for_windows=2, cooldown="1h")
    return AlertRule(**{**base, **kw})


def run(store, rules, values, t0=0.0, step=600.0):
    """Evaluate one window per value; return the kinds of the queued events."""
    out = []
    for i, v in enumerate(values):
        metrics = {} if v is None else {"drift.detected": v}
        out += [e.kind for e in evaluate(rules, "m", metrics, window_end=t0 + i * step, store=store, now=t0 + i * step)]
    return out


def test_for_windows_dedup_and_resolve(state_uri):
    with AlertStore(state_uri) as store:
        kinds = run(store, [rule()], [1, 0, 1, 1, 1, 1, None, 0])
        assert kinds == ["firing", "resolved"]  # one breach is not enough; firing once; no-data changes nothing
        assert store.get_state("drift", "m").status == "inactive"


def test_cooldown_suppresses_a_quick_refire(tmp_path):
    with AlertStore(tmp_path / "state.db") as store:
        kinds = run(store, [rule(for_windows=1, cooldown="1h")], [1, 0, 1, 0], step=600)
        assert kinds == ["firing", "resolved", "resolved"]  # the second episode fired silently
        kinds = run(store, [rule(for_windows=1, cooldown="1h")], [1], t0=3 * HOUR)
        assert kinds == ["firing"]


def test_restart_neither_refires_nor_forgets(state_uri):
    db = state_uri
    r = [rule(for_windows=2)]
    with AlertStore(db) as store:
        assert run(store, r, [1, 1]) == ["firing"]
    with AlertStore(db) as store:  # a new process
        assert store.get_state("drift", "m").status == "firing"
        # re-evaluating the same last window, then another breaching one: no new notification
        assert run(store, r, [1], t0=600.0) == []
        assert run(store, r, [1], t0=1200.0) == []
        assert run(store, r, [0], t0=1800.0) == ["resolved"]


def test_pending_state_survives_restart(state_uri):
    db = state_uri
    with AlertStore(db) as store:
        assert run(store, [rule(for_windows=3)], [1, 1]) == []
    with AlertStore(db) as store:
        assert store.get_state("drift", "m").breaches == 2
        assert run(store, [rule(for_windows=3)], [1], t0=1200.0) == ["firing"]


def test_webhook_and_log_delivery_with_retry(tmp_path, state_uri):
    log_path = tmp_path / "alerts.jsonl"
    with Hook(status=500) as bad, AlertStore(state_uri) as store:
        rules = [rule(for_windows=1, webhooks=[bad.url], severity="critical")]
        run(store, rules, [1])
        delivered, failed = deliver_pending(store, rules, log_path=log_path)
        assert not delivered and len(failed) == 1 and "HTTP 500" in failed[0][1]
        assert len(bad.bodies) == 1 and not log_path.exists()
        assert len(store.events(pending_only=True)) == 1
        bad.status = 200  # the receiver recovers: the pending event goes out, once
        delivered, failed = deliver_pending(store, rules, log_path=log_path)
        assert len(delivered) == 1 and not failed
        body = bad.bodies[-1]
        assert body["status"] == "firing" and body["alert"] == "drift" and body["severity"] == "critical"
        assert body["model"] == "m" and body["value"] == 1.0
        assert json.loads(log_path.read_text().splitlines()[0])["alert"] == "drift"
        assert deliver_pending(store, rules, log_path=log_path) == ([], [])
        assert len(bad.bodies) == 2


def test_unreachable_webhook_stays_pending(tmp_path):
    with AlertStore(tmp_path / "state.db") as store:
        rules = [rule(for_windows=1, webhooks=["http://127.0.0.1:9/nothing"])]
        run(store, rules, [1])
        delivered, failed = deliver_pending(store, rules, timeout=1.0)
        assert not delivered and "127.0.0.1:9" in failed[0][1]
        assert store.events(pending_only=True)[0].kind == "firing"


def test_rule_validation_and_model_filter(tmp_path):
    with pytest.raises(SpecError, match=r"monitoring.alerts.0.for_windows"):
        parse_rules([{"name": "a", "metric": "drift.share", "threshold": 0.3, "for_windows": 0}])
    with pytest.raises(SpecError, match="cooldown"):
        parse_rules([{"name": "a", "metric": "drift.share", "threshold": 0.3, "cooldown": "soon"}])
    with AlertStore(tmp_path / "state.db") as store:
        assert run(store, [rule(for_windows=1, model="other")], [1, 1]) == []


def test_prometheus_rules_export():
    rules = parse_rules([
        {"name": "InputDrift", "metric": "drift.detected", "threshold": 1, "for_windows": 3, "severity": "critical"},
        {"name": "AmountPSI", "metric": "drift.feature.amount", "threshold": 0.25, "model": "fraud"},
        {"name": "LowAUC", "metric": "performance.roc_auc", "op": "<", "threshold": 0.7},
        {"name": "Missing", "metric": "quality.missing_rate.amount", "threshold": 0.1},
    ])
    doc = yaml.safe_load(yaml.safe_dump(prometheus_rules(rules, evaluation_interval="5m")))
    g = doc["groups"][0]
    assert g["interval"] == "5m"
    by = {r["alert"]: r for r in g["rules"]}
    assert by["InputDrift"]["expr"] == "loopml_drift_detected >= 1" and by["InputDrift"]["for"] == "10m"
    assert by["InputDrift"]["labels"]["severity"] == "critical"
    assert by["AmountPSI"]["expr"] == 'loopml_drift_score{feature="amount",model="fraud"} >= 0.25'
    assert by["LowAUC"]["expr"] == 'loopml_live_metric{metric="roc_auc"} < 0.7'
    assert by["Missing"]["expr"] == 'loopml_quality{column="amount",measure="missing_rate"} >= 0.1'
    assert "for" not in by["LowAUC"]


def test_a_failed_evaluation_leaves_no_state_and_no_event(state_uri):
    """The state change and its queued notification commit together or not at all."""
    with AlertStore(state_uri) as store:
        with pytest.raises(RuntimeError):
            with store.transaction() as tx:
                tx.put_state(AlertState(rule="drift", model="m", status="firing", breaches=1))
                tx.add_event(AlertEvent(rule="drift", model="m", kind="firing", value=1.0, threshold=1.0,
                                        severity="warning", message="x", ts=0.0, window_end=0.0))
                raise RuntimeError("killed half way")
        assert store.get_state("drift", "m") is None and store.events() == []
