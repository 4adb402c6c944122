"""No process-global MLflow state (#8): two workspaces in one process do not see each other."""

import logging
import os
import warnings

import mlflow

from loopml.config import Workspace
from loopml.registry.client import CHALLENGER, CHAMPION, Registry
from tests.registry.mlflow_raw import fitted, frame


def _train_and_register(reg: Registry, name: str, tag: str) -> str:
    X, _ = frame(5)
    with reg.run(name, run_name=f"{name}-{tag}") as run:
        run.set_tags({"which": tag})
        run.log_params({"C": 1.0})
        run.log_metrics({"score": 0.5})
        run.log_dict({"which": tag}, "note.json")
        run.log_dataset(X, source="inline", name=tag, context="training")
        uri = run.log_model(fitted(), X)
        assert uri.startswith("models:/m-")
        ref = reg.register(uri, name, run.run_id, {"which": tag})
    return ref.version


def test_two_registries_in_one_process_stay_apart(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # MLflow's default store is ./mlflow.db: nothing may fall back to it
    uri_before = mlflow.get_tracking_uri()
    registry_before = mlflow.get_registry_uri()
    env_before = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    mlflow_level = logging.getLogger("mlflow").level
    filters_before = _mlflow_filters()

    a = Registry(Workspace(tmp_path / "a"))
    b = Registry(Workspace(tmp_path / "b"))
    # interleaved: a run in A, a run in B, then registrations and aliases crossing over
    va1 = _train_and_register(a, "shared", "a1")
    vb1 = _train_and_register(b, "shared", "b1")
    va2 = _train_and_register(a, "shared", "a2")
    a.promote("shared", va1, "A's champion")
    b.promote("shared", vb1, "B's champion")
    a.set_alias("shared", CHALLENGER, va2, "A's challenger")

    assert [v.version for v in a.versions("shared")] == ["1", "2"]
    assert [v.tags["which"] for v in a.versions("shared")] == ["a1", "a2"]
    assert [v.tags["which"] for v in b.versions("shared")] == ["b1"]
    assert a.resolve("shared").version == "1" and a.resolve("shared", CHALLENGER).version == "2"
    assert b.try_resolve("shared", CHALLENGER) is None
    assert [c.why for c in b.history("shared")] == ["B's champion"]
    for reg, tag in ((a, "a1"), (b, "b1")):
        ref = reg.resolve("shared", CHAMPION)
        run = reg.client.get_run(ref.run_id)
        assert run.data.tags["which"] == tag and run.info.status == "FINISHED"
        assert run.data.params["C"] == "1.0" and run.data.metrics["score"] == 0.5
        assert reg.load_native(ref).predict(frame(3)[0]).shape == (3,)
        assert [c["name"] for c in reg.signature(ref)["inputs"]] == ["a", "b"]
        # each workspace keeps its own artifacts
        assert str(reg.workspace.home) in reg.client.get_model_version_download_uri("shared", ref.version)

    assert mlflow.get_tracking_uri() == uri_before
    assert mlflow.get_registry_uri() == registry_before
    assert mlflow.active_run() is None
    assert {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")} == env_before
    assert logging.getLogger("mlflow").level == mlflow_level
    assert _mlflow_filters() == filters_before  # (other libraries add their own on import)
    assert list(cwd.iterdir()) == []


def _mlflow_filters() -> list:
    return [f for f in warnings.filters if f[3] is not None and "mlflow" in getattr(f[3], "pattern", str(f[3]))]
