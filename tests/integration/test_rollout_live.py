"""Progressive rollout against a real server on 127.0.0.1, real MLflow, real traffic.

A bad challenger (raising, or slow) is injected with tests/loop/faulty.py and must be rolled
back by the controller on its own, having been seen by no client (shadow) or only by its
canary share (canary).
"""

from __future__ import annotations

import time

import httpx
import pandas as pd
import pytest

from loopml.demo.traffic import Traffic
from loopml.loop.admin_client import ServerClient
from loopml.loop.controller import Controller
from loopml.loop.server_process import ServerProcess
from loopml.loop.state import StateStore
from loopml.registry import audit
from loopml.registry.client import Registry
from loopml.spec import RolloutSpec, RolloutStep, load_spec

TOKEN = "test-admin-token"


@pytest.fixture
def live(registered_model, project):
    ws, name = registered_model
    server = ServerProcess(ws, [f"{name}@champion"], poll_interval=0.5, token=TOKEN,
                           env={"LOOPML_TEST_FAULT": "1"}).start()
    try:
        yield ws, project, server
    finally:
        server.stop()


def _spec(project, estimator=None, params=None, steps=None, min_requests=30):
    spec = load_spec(project)
    if estimator:
        spec.model.estimator, spec.model.params = estimator, params or {}
    spec.rollout = RolloutSpec(steps=steps or [RolloutStep(kind="shadow", min_requests=min_requests),
                                               RolloutStep(kind="canary", weight=0.2), RolloutStep(kind="canary", weight=0.5)],
                               min_requests=min_requests, latency_budget_ms=None)
    spec.triggers.on_drift = False
    return spec


def _drive(ctl: Controller, store: StateStore, model: str, timeout: float = 120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ctl.tick()
        latest = store.rollouts(model, limit=1)
        if latest and latest[0].status in ("promoted", "rolled_back"):
            return latest[0]
        time.sleep(0.2)
    raise AssertionError(f"rollout did not finish in {timeout} s: {store.rollouts(model, limit=1)}")


def _features(project, spec):
    df = pd.read_csv(project / "data" / "transactions_recent.csv")
    return df, spec.feature_columns(list(df.columns))


def test_raising_challenger_refused_by_the_servers_check_and_rolled_back(live):
    """A challenger that raises on every prediction fails the server's smoke check when it is
    loaded for the shadow step: it never sees a request; the rollout rolls back and blocks it."""
    ws, project, server = live
    spec = _spec(project, "tests.loop.faulty.FaultyClassifier", {"fault": "errors"})
    store = StateStore(ws.state_db)
    ctl = Controller(spec, ws, ServerClient(server.url, TOKEN), project_dir=project, say=print)
    store.add_trigger(spec.name, "manual", "test")
    df, feats = _features(project, spec)
    with Traffic(server.url, df, feats, workers=3) as traffic:
        rollout = _drive(ctl, store, spec.name)
    assert rollout.status == "rolled_back" and rollout.step == 0  # before any traffic reached it
    assert "failed its check" in rollout.decisions[-1]["reasons"][0]
    reg = Registry(ws)
    assert reg.resolve(spec.name).version == "1"
    challenger = reg.resolve(spec.name, rollout.challenger)
    assert challenger.tags["loopml.rollout"] == "rolled_back" and challenger.blocked
    # no client ever got an answer from the challenger, and none failed
    assert set(traffic.counts) == {"1"} and traffic.errors == 0
    events = [c for c in audit.read(ws.audit_log, spec.name) if c.action == "rollout-rollback"]
    assert events and "injected failure" in events[-1].why
    described = ServerClient(server.url, TOKEN).describe(spec.name)
    assert described["policy"]["kind"] == "single" and described["challenger"] is None


def test_challenger_that_breaks_on_live_traffic_rolled_back_during_shadow(live):
    """A challenger that passes the server's smoke check and then raises on live traffic is
    rolled back in the shadow step on its error rate: no client ever sees one of its answers."""
    ws, project, server = live
    steps = [RolloutStep(kind="shadow", min_requests=200), RolloutStep(kind="canary", weight=0.5)]
    spec = _spec(project, "tests.loop.faulty.FaultyClassifier", {"fault": "errors_after", "healthy_calls": 8},
                 steps=steps)
    store = StateStore(ws.state_db)
    ctl = Controller(spec, ws, ServerClient(server.url, TOKEN), project_dir=project, say=print)
    store.add_trigger(spec.name, "manual", "test")
    df, feats = _features(project, spec)
    with Traffic(server.url, df, feats, workers=3) as traffic:
        rollout = _drive(ctl, store, spec.name)
    assert rollout.status == "rolled_back" and rollout.step == 0
    reasons = " ".join(rollout.decisions[-1]["reasons"])
    assert "error" in reasons.lower() and "failed its check" not in reasons, reasons
    reg = Registry(ws)
    assert reg.resolve(spec.name).version == "1" and reg.resolve(spec.name, rollout.challenger).blocked
    assert set(traffic.counts) == {"1"} and traffic.errors == 0  # shadow answers never reach a client


def test_slow_challenger_rolled_back_at_canary_seen_only_by_its_share(live):
    ws, project, server = live
    steps = [RolloutStep(kind="canary", weight=0.1, min_requests=20), RolloutStep(kind="canary", weight=0.5)]
    spec = _spec(project, "tests.loop.faulty.FaultyClassifier", {"fault": "slow", "delay_ms": 400}, steps=steps)
    store = StateStore(ws.state_db)
    ctl = Controller(spec, ws, ServerClient(server.url, TOKEN), project_dir=project, say=print)
    store.add_trigger(spec.name, "manual", "test")
    df, feats = _features(project, spec)
    # 8 clients: the canary step waits for 20 answers from a model that takes 400 ms a batch;
    # more clients at once fill its batches (the routing share stays 10%, whatever the load)
    with Traffic(server.url, df, feats, workers=8) as traffic:
        rollout = _drive(ctl, store, spec.name)
    assert rollout.status == "rolled_back" and rollout.step == 0
    assert any("TOO SLOW" in r for r in rollout.decisions[-1]["reasons"])
    answered = sum(traffic.counts.values())
    slow_share = traffic.counts.get(rollout.challenger, 0) / answered
    assert 0 < slow_share < 0.25, traffic.counts  # its 10% canary share (plus noise), never more
    assert Registry(ws).resolve(spec.name).version == "1"
    r = httpx.post(f"{server.url}/invocations", json={"dataframe_records": df[feats].head(1).to_dict("records")})
    assert r.headers["x-loopml-model-version"] == "1"


def test_triggers_during_rollout_queue_up(live):
    ws, project, server = live
    spec = _spec(project, min_requests=20)
    spec.rollout.max_p99_ratio = 10.0  # this test is about queueing; latency has its own test
    store = StateStore(ws.state_db)
    ctl = Controller(spec, ws, ServerClient(server.url, TOKEN), project_dir=project, say=print)
    store.add_trigger(spec.name, "manual", "first")
    df, feats = _features(project, spec)
    with Traffic(server.url, df, feats, workers=3) as traffic:
        ctl.tick()  # retrain + start the rollout
        active = store.active_rollout(spec.name)
        assert active is not None
        second = store.add_trigger(spec.name, "schedule", "while rolling out")
        assert second.status == "queued"
        ctl.tick()
        assert store.rollouts(spec.name, limit=1)[0].id == active.id  # no second rollout
        assert store.trigger(second.id).status == "queued"
        rollout = _drive(ctl, store, spec.name)
    assert rollout.status == "promoted" and Registry(ws).resolve(spec.name).version == rollout.challenger
    assert traffic.errors == 0
    ctl.tick()  # now the queued trigger runs: same data, so nothing new to roll out
    assert store.trigger(second.id).status == "done"
    assert store.active_rollout(spec.name) is None
