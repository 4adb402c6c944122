"""Online metrics in a rollout: labels that arrived for this step's predictions, by version."""

import time

import numpy as np
import pandas as pd

from loopml.loop.admin_client import ServerClient
from loopml.loop.controller import Controller
from loopml.loop.state import StateStore
from loopml.monitor.labels import ingest_labels, labels_folder
from loopml.monitor.predlog import write_part
from loopml.spec import load_spec


def test_online_metric_drop_from_labels(workspace, project):
    spec = load_spec(project)
    ctl = Controller(spec, workspace, ServerClient("http://127.0.0.1:9", None), project_dir=project, say=lambda m: None)
    rollout = StateStore(workspace.state_db).start_rollout(spec.name, "2", "1")
    assert ctl.online_metric_drop(rollout) is None  # no labels yet
    rng = np.random.default_rng(0)
    now = time.time() + 1
    y = rng.integers(0, 2, 200)
    records = []
    for i in range(200):
        version = "1" if i % 2 else "2"
        good = y[i] * 0.8 + 0.1 + rng.normal(0, 0.05)  # champion: informative scores
        bad = rng.uniform()  # challenger: noise
        p = good if version == "1" else bad
        records.append({"request_id": f"r{i}", "ts": now, "model": spec.name, "version": version, "variant": "x",
                        "inputs": {"amount": 1.0}, "outputs": {"prediction": int(p > 0.5), "proba": float(p)}})
    write_part(workspace.predictions / spec.name, records)
    ingest_labels(labels_folder(workspace.home, spec.name),
                  pd.DataFrame({"request_id": [f"r{i}" for i in range(200)], "label": y}))
    drop = ctl.online_metric_drop(rollout)
    assert drop is not None and drop > 0.3  # roc_auc ~1.0 for the champion vs ~0.5 for the challenger


def test_step_without_evidence_pauses_after_its_timeout(workspace, project, monkeypatch):
    from loopml.loop import controller as ctl_mod

    spec = load_spec(project)
    spec.rollout.step_timeout_s = 60
    now = [1000.0]
    ctl = Controller(spec, workspace, ServerClient("http://127.0.0.1:9", None), project_dir=project,
                     say=lambda m: None, clock=lambda: now[0])
    store = StateStore(workspace.state_db)
    rollout = store.start_rollout(spec.name, "2", "1")
    rollout = store.update_rollout(rollout, step_started=now[0], baseline={"x": 0.0})
    monkeypatch.setattr(ctl_mod.signals, "scrape", lambda text, model: {})
    monkeypatch.setattr(ServerClient, "metrics_text", lambda self: "")
    ctl.drive(rollout)  # no traffic: holds
    assert store.rollout(rollout.id).status == "running"
    now[0] += 61
    ctl.drive(store.rollout(rollout.id))
    paused = store.rollout(rollout.id)
    assert paused.status == "paused" and "paused" in paused.decisions[-1]["reasons"][-1]
