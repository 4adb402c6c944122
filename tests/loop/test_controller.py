"""The controller keeps going and remembers (issue #8): it survives any error of a tick, backs
off a failing retraining per cause, adopts an edited loopml.yaml (a broken edit is reported
once and the running spec kept), blocks what it rolled back, and never reads "the registry
could not be asked" as "there is no champion"."""

from __future__ import annotations

import os
import sqlite3

import pytest
import yaml

from loopml.errors import LoopmlError, RegistryUnavailable
from loopml.loop.controller import Controller
from loopml.loop.pipeline import PipelineResult
from loopml.loop.state import StaleRollout, StateStore
from loopml.registry import audit
from loopml.spec import load_spec


class FakeServer:
    """The controller's ServerClient, recording what it was asked (no HTTP)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def set_policy(self, model, policy):
        self.calls.append(("policy", model, policy))

    def reload(self, model):
        self.calls.append(("reload", model))

    def metrics_text(self) -> str:
        return ""


def edit_spec(project, change) -> None:
    """Rewrite loopml.yaml with ``change(raw)`` applied; bump its mtime so no clock granularity hides it."""
    path = project / "loopml.yaml"
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def quiet_triggers(raw) -> None:
    raw["triggers"] = {"on_drift": False, "debounce_s": 30}


def make(spec, workspace, project, **kw) -> tuple[Controller, list[str]]:
    said: list[str] = []
    ctl = Controller(spec, workspace, FakeServer(), project_dir=project, say=said.append, **kw)
    return ctl, said


# -- item 1: the loop survives any exception, says it, records it, backs off ---------------------

def test_run_survives_errors_that_are_not_loopml_errors(workspace, project):
    edit_spec(project, quiet_triggers)
    ctl, said = make(load_spec(project), workspace, project)
    from mlflow.exceptions import MlflowException

    errors = [sqlite3.OperationalError("database is locked"), OSError(28, "No space left on device"),
              MlflowException("API request failed with error code 500"),
              RegistryUnavailable("http://tracking:5000", "HTTP 503")]
    ticks: list[int] = []

    def tick():
        ticks.append(1)
        if errors:
            raise errors.pop(0)

    ctl.tick = tick
    ctl.run(lambda: len(ticks) >= 6, interval=0.0)
    assert len(ticks) == 6  # every error was survived; the loop went on
    failures = [m for m in said if "tick failed" in m]
    assert len(failures) == 4 and all("\n" not in m for m in failures)
    assert "OperationalError: database is locked" in failures[0] and "No space left" in failures[1]
    assert any("recovered" in m for m in said)
    recorded = [c for c in audit.read(workspace.audit_log, ctl.model) if c.action == "controller-error"]
    assert len(recorded) == 4 and "OperationalError" in recorded[0].why
    assert StateStore(workspace.state_db).get(f"controller.error.{ctl.model}") is None  # recovered: cleared


def test_failing_ticks_back_off_exponentially_capped_and_status_shows_the_error(workspace, project):
    edit_spec(project, quiet_triggers)
    sleeps: list[float] = []
    ctl, said = make(load_spec(project), workspace, project, sleep=sleeps.append)
    seen: list = []

    def tick():
        raise sqlite3.OperationalError("disk I/O error")

    ctl.tick = tick
    store = StateStore(workspace.state_db)
    ctl.run(lambda: seen.append(store.get(f"controller.error.{ctl.model}")) or len(sleeps) >= 12, interval=0.5)
    assert sleeps[:4] == [1.0, 2.0, 4.0, 8.0]
    assert sleeps == sorted(sleeps) and max(sleeps) == 60.0  # capped
    last = seen[-1]
    assert last["failures"] == 12 and "disk I/O error" in last["error"] and last["next_try"] > last["ts"]
    # the same error again is said each time but recorded in the audit log once
    assert len([c for c in audit.read(workspace.audit_log, ctl.model) if c.action == "controller-error"]) == 1


def test_a_controller_whose_audit_log_fails_keeps_running(workspace, project, monkeypatch):
    edit_spec(project, quiet_triggers)
    ctl, said = make(load_spec(project), workspace, project)
    ticks: list[int] = []

    def tick():
        ticks.append(1)
        if len(ticks) < 3:
            raise OSError(13, "Permission denied", str(workspace.audit_log))

    def broken_audit(*a, **k):
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(audit, "record_event", broken_audit)
    ctl.tick = tick
    ctl.run(lambda: len(ticks) >= 4, interval=0.0)
    assert len(ticks) == 4


def test_stale_rollout_is_a_loopml_error():
    e = StaleRollout(3, "paused", "running")
    assert isinstance(e, LoopmlError) and e.exit_code == 2 and "rollout 3 is paused" in str(e)


def _fake_pipeline(monkeypatch, version: str, cached: bool = False) -> list[PipelineResult]:
    """run_pipeline and the training window replaced: the gate passed for ``version``."""
    from loopml.loop import pipeline, training_window

    runs: list[PipelineResult] = []

    def run_pipeline(spec, ws, **kw):
        r = PipelineResult(model=spec.name, snapshot_id="snap", cached=cached, version=version, gate_passed=True,
                           gate_reasons=["roc_auc better by 0.1"], metrics={"roc_auc": 0.9})
        runs.append(r)
        return r

    monkeypatch.setattr(pipeline, "run_pipeline", run_pipeline)
    monkeypatch.setattr(training_window, "retrain_frame", lambda spec, project_dir, ws: (None, "data.csv"))
    return runs


def test_registry_unavailable_while_deciding_champion_promotes_nothing(workspace, project, monkeypatch):
    edit_spec(project, quiet_triggers)
    spec = load_spec(project)
    spec.rollout.latency_budget_ms = None
    ctl, said = make(spec, workspace, project)
    _fake_pipeline(monkeypatch, "2")
    moved: list = []

    def unavailable(*a, **k):
        raise RegistryUnavailable("http://tracking:5000", "the server keeps answering with server errors (HTTP 5xx)")

    monkeypatch.setattr(ctl.registry, "try_resolve", unavailable)
    monkeypatch.setattr(ctl.registry, "promote", lambda *a, **k: moved.append(("promote", a)))
    monkeypatch.setattr(ctl.registry, "set_alias", lambda *a, **k: moved.append(("set_alias", a)))
    store = StateStore(workspace.state_db)
    trig = store.add_trigger(spec.name, "manual", "by hand")
    ctl.tick()  # the step stops here: no exception escapes, nothing moves
    assert moved == [] and store.active_rollout(spec.name) is None and ctl.server.calls == []
    failed = store.trigger(trig.id)
    assert failed.status == "failed" and "unavailable" in failed.result
    assert any("[retrain] failed" in m and "next try in" in m for m in said)


# -- item 2: a failing retraining backs off per cause -------------------------------------------

def test_a_retrain_that_always_fails_is_tried_a_logarithmic_number_of_times(workspace, project):
    def schedule_every_10s(raw):
        raw["triggers"] = {"on_drift": False, "interval_s": 10, "debounce_s": 30}
        raw["retrain"] = {"source": "data/no_such_file.csv", "max_rows": 1000}  # read at once: fails at once

    edit_spec(project, schedule_every_10s)
    now = [1_000_000.0]
    ctl, said = make(load_spec(project), workspace, project, clock=lambda: now[0])
    store = StateStore(workspace.state_db)
    ticks = 300  # 3,000 s of fake time, a schedule trigger every tick
    for _ in range(ticks):
        now[0] += 10
        ctl.tick()
    failed = [t for t in store.triggers(ctl.model, limit=1000) if t.status == "failed"]
    # backoff 30 s, 60 s, 120 s, ... : 7 tries in 3,000 s; every tick would be 300
    assert 4 <= len(failed) <= 9, [t.created for t in failed]
    assert all("no_such_file.csv" in t.result for t in failed)
    retry = store.retries(ctl.model)[0]
    assert retry.failures == len(failed) and retry.next_try > now[0] and retry.waiting
    lines = [m for m in said if m.startswith("[retrain] failed")]
    assert len(lines) == len(failed) and all("next try in" in m for m in lines)
    waits = [float(m.split("next try in ")[1].split(" s")[0]) for m in lines]
    assert waits[0] >= 30 and all(b == 2 * a for a, b in zip(waits, waits[1:]))  # respects debounce_s, doubles


def test_a_successful_retrain_ends_the_backoff(workspace, project, monkeypatch):
    edit_spec(project, quiet_triggers)
    now = [1_000_000.0]
    ctl, said = make(load_spec(project), workspace, project, clock=lambda: now[0])
    store = StateStore(workspace.state_db)
    store.record_failure(ctl.model, "manual: by hand", "manual", "by hand", "boom", now=now[0], base_s=30, cap_s=3600)
    now[0] += 31
    _fake_pipeline(monkeypatch, "1")
    monkeypatch.setattr(ctl.registry, "try_resolve", lambda *a, **k: type("R", (), {"version": "1"})())
    ctl.tick()  # the due retry is queued, claimed and succeeds ("already champion")
    assert store.retries(ctl.model) == []
    assert store.triggers(ctl.model, limit=1)[0].status == "done"


# -- item 3: an edited loopml.yaml is picked up --------------------------------------------------

def test_an_edited_spec_is_adopted_and_a_broken_edit_is_reported_once(workspace, project):
    edit_spec(project, quiet_triggers)
    ctl, said = make(load_spec(project), workspace, project)
    ctl.tick()
    before = ctl.spec.rollout.min_requests

    edit_spec(project, lambda raw: raw["rollout"].__setitem__("min_requests", before + 7))
    ctl.tick()
    assert ctl.spec.rollout.min_requests == before + 7
    assert any("loopml.yaml changed" in m and "rollout" in m for m in said)

    said.clear()
    edit_spec(project, lambda raw: raw["rollout"].__setitem__("min_requests", "lots"))
    for _ in range(3):
        ctl.tick()
    edit_spec(project, lambda raw: None)  # touched again, same broken content: not said again
    ctl.tick()
    assert ctl.spec.rollout.min_requests == before + 7  # the running spec is kept
    reported = [m for m in said if "not applied" in m]
    assert len(reported) == 1 and "min_requests" in reported[0] and "\n" not in reported[0]

    edit_spec(project, lambda raw: raw["rollout"].__setitem__("min_requests", 11))
    ctl.tick()
    assert ctl.spec.rollout.min_requests == 11


def test_an_edit_that_renames_the_model_is_refused(workspace, project):
    edit_spec(project, quiet_triggers)
    ctl, said = make(load_spec(project), workspace, project)
    ctl.tick()
    name = ctl.spec.name
    edit_spec(project, lambda raw: raw.__setitem__("name", name + "_other"))
    ctl.tick()
    assert ctl.spec.name == name and ctl.model == name
    assert any("not applied" in m and "name" in m for m in said)


# -- item 4: a rolled-back version is blocked ------------------------------------------------------

def _second_version(reg, name: str) -> str:
    v1 = reg.resolve(name, "1")
    return reg.register(v1.source, name, v1.run_id, {"loopml.test": "copy of v1"}).version


def test_an_automatic_rollback_blocks_the_version(registered_model, project):
    ws, name = registered_model
    edit_spec(project, quiet_triggers)
    spec = load_spec(project)
    ctl, said = make(spec, ws, project)
    v2 = _second_version(ctl.registry, name)
    store = StateStore(ws.state_db)
    rollout = store.start_rollout(name, v2, "1")
    rollout = store.update_rollout(rollout, status="rolling_back",
                                   decision={"action": "rollback", "reasons": ["error rate 30% vs 0%"], "evidence": {}})
    ctl.drive(rollout)
    assert store.rollout(rollout.id).status == "rolled_back"
    ref = ctl.registry.resolve(name, v2)
    assert ref.blocked and "error rate 30%" in ref.blocked
    assert ctl.registry.resolve(name).version == "1"


def test_a_version_rolled_back_by_hand_is_not_rolled_out_again_by_a_retrain(registered_model, project, monkeypatch):
    ws, name = registered_model
    edit_spec(project, quiet_triggers)
    spec = load_spec(project)
    spec.rollout.latency_budget_ms = None
    ctl, said = make(spec, ws, project)
    v2 = _second_version(ctl.registry, name)
    ctl.registry.promote(name, v2, "by hand")
    ctl.registry.rollback(name, "by hand: v2 misbehaves")  # v1 is champion again; v2 is blocked
    assert ctl.registry.resolve(name).version == "1"
    _fake_pipeline(monkeypatch, v2, cached=True)  # the next retrain rebuilds v2 from the pipeline cache
    store = StateStore(ws.state_db)
    trig = store.add_trigger(name, "drift", "drift alert")
    ctl.tick()
    assert store.active_rollout(name) is None and ctl.server.calls == []
    done = store.trigger(trig.id)
    assert done.status == "done" and "blocked" in done.result
    assert any("blocked" in m for m in said)


class RefusingServer(FakeServer):
    """A server whose smoke check of the challenger failed: it answers 422 to the traffic change."""

    def set_policy(self, model, policy):
        from loopml.loop.admin_client import ServerRefused

        self.calls.append(("policy", model, policy))
        if policy["kind"] != "single":
            raise ServerRefused(f"PUT /admin/models/{model}/traffic -> 422: model '{model}' version "
                                f"{policy['challenger']} failed its check", 422)


def test_a_challenger_the_server_refuses_is_rolled_back_and_blocked_not_retried_forever(registered_model, project,
                                                                                         monkeypatch):
    ws, name = registered_model
    edit_spec(project, quiet_triggers)
    spec = load_spec(project)
    spec.rollout.latency_budget_ms = None
    said: list[str] = []
    ctl = Controller(spec, ws, RefusingServer(), project_dir=project, say=said.append)
    v2 = _second_version(ctl.registry, name)
    _fake_pipeline(monkeypatch, v2)
    store = StateStore(ws.state_db)
    store.add_trigger(name, "manual", "by hand")
    ctl.tick()
    rollout = store.rollouts(name, limit=1)[0]
    assert rollout.status == "rolled_back" and "failed its check" in rollout.decisions[-1]["reasons"][0]
    assert ctl.server.calls[-1][2] == {"kind": "single"}
    assert ctl.registry.resolve(name, v2).blocked and ctl.registry.resolve(name).version == "1"
    ctl.tick()  # nothing left to do: no retry of the refused step
    assert store.active_rollout(name) is None
