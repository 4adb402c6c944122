"""Real Ray Tune, in a private network namespace: ``loopml tune`` on a scikit-learn and a torch
project (one Ray start): every trial an MLflow child run of the tuning run with its params and
metrics, ASHA on the torch trainer's per-epoch reports, the best configuration registered
through the gate."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from loopml.config import Workspace
from loopml.registry.client import Registry
from tests.integration.ray_job import REPO, TUNE_TORCH, ray_command


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    env = {k: v for k, v in os.environ.items() if k not in ("LOOPML_HOME", "LOOPML_TRACKING_URI")}
    env["COLUMNS"] = "200"  # Rich's table, unwrapped
    p = subprocess.run(ray_command("tune", str(root)), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    out = {}
    for kind in ("sklearn", "torch", "sklearn-again"):
        out[kind] = p.stdout.split(f"TUNE {kind}\n", 1)[1].split(f"END {kind}\n", 1)[0]
    return root, out


def _runs(root, kind, nth=0):
    """The registry, the nth tuning run of ``kind``'s workspace and its trials' child runs."""
    reg = Registry(Workspace(root / f"ws-{kind}"))
    runs = reg.client.search_runs([reg.experiment_id("tab")], order_by=["attributes.start_time ASC"])
    parent = [r for r in runs if r.data.tags.get("loopml.reason") == "tune"][nth]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return reg, parent, children


def test_sklearn_trials_are_child_runs_and_the_best_goes_through_the_gate(tuned):
    root, out = tuned
    reg, parent, children = _runs(root, "sklearn")
    assert len(children) == 4
    for c in children:
        assert c.info.status == "FINISHED" and float(c.data.params["C"]) > 0
        assert 0.5 < c.data.metrics["roc_auc"] <= 1.0
    top = max(c.data.metrics["roc_auc"] for c in children)
    best = next(c for c in children if c.info.run_id == parent.data.tags["loopml.best_trial_run"])
    assert best.data.metrics["roc_auc"] == top  # (several C values can tie on 300 rows)
    assert parent.data.params["best.C"] == best.data.params["C"]
    assert parent.data.metrics["best_roc_auc"] == best.data.metrics["roc_auc"]
    # the tuned model: retrained with the best C, gated and registered like any challenger
    version = reg.resolve("tab")
    assert version.version == parent.data.tags["loopml.tuned_version"] == "1"
    tuned_run = reg.client.get_run(parent.data.tags["loopml.tuned_run"])
    assert float(tuned_run.data.params["C"]) == float(best.data.params["C"])
    assert "gate.json" in [a.path for a in reg.client.list_artifacts(tuned_run.info.run_id)]
    # the live table's last state and the gate decision
    assert "trials 4/4 done; best roc_auc (max):" in out["sklearn"]
    assert "gate passed" in out["sklearn"] and "tab version 1: promoted to champion" in out["sklearn"]


def test_torch_trials_report_every_epoch_under_asha(tuned):
    root, out = tuned
    reg, parent, children = _runs(root, "torch")
    shown = json.loads(out["torch"])
    epochs = TUNE_TORCH[0]["epochs"]
    assert len(children) == len(shown["trials"]) == 4
    by_run = {t["run_id"]: t for t in shown["trials"]}
    for c in children:
        history = reg.client.get_metric_history(c.info.run_id, "roc_auc")
        trial = by_run[c.info.run_id]
        assert sorted(m.step for m in history) == list(range(trial["reports"]))  # one point per epoch
        assert 1 <= trial["reports"] <= epochs
        stopped = c.data.tags.get("loopml.trial_stopped_early") == "true"
        assert stopped == (trial["reports"] < epochs) == (trial["status"] == "STOPPED")
        assert {"lr", "hidden"} <= set(c.data.params)
    best = shown["best"]
    assert best["metric"] == max(t["metric"] for t in shown["trials"])
    result = shown["result"]
    assert result["version"] == "1" and result["gate_passed"]
    tuned_run = reg.client.get_run(result["run_id"])
    assert float(tuned_run.data.params["lr"]) == pytest.approx(best["config"]["lr"])
    assert tuned_run.data.params["hidden"] == str(best["config"]["hidden"])


def test_the_same_spec_samples_the_same_configurations(tuned):
    root, out = tuned
    _, _, first = _runs(root, "sklearn", 0)
    _, second_parent, second = _runs(root, "sklearn", 1)
    assert sorted(c.data.params["C"] for c in first) == sorted(c.data.params["C"] for c in second)
    result = json.loads(out["sklearn-again"])["result"]
    assert result["cached"] and result["version"] == "1"  # nothing changed: no second version
    assert second_parent.data.tags["loopml.tuned_version"] == "1"
