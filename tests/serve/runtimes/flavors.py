"""Models of other flavors logged the ordinary MLflow way (``mlflow.<flavor>.save_model``),
registered with a plain MlflowClient into a real workspace, as a user would."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np

from loopml.config import Workspace


def workspace_at(root: Path) -> Workspace:
    return Workspace(root.resolve()).init()


def register_saved(ws: Workspace, name: str, save: Callable[[str], Any]) -> str:
    """``save(path)`` writes an MLflow model folder; it is logged to a run and registered."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=ws.tracking_uri, registry_uri=ws.tracking_uri)
    exp = client.get_experiment_by_name("flavors")
    exp_id = exp.experiment_id if exp else client.create_experiment(
        "flavors", artifact_location=(ws.home / "flavors").as_uri())
    run = client.create_run(exp_id)
    local = ws.home.parent / f"model-{uuid.uuid4().hex[:8]}"
    save(str(local))
    client.log_artifacts(run.info.run_id, str(local), "model")
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except Exception:  # noqa: BLE001 - exists already
        pass
    return str(client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id).version)


def tabular(n: int = 300, k: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A float32 matrix and a 3-class label that depends on it."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, k)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)
    return X, y


def mlp(k: int = 8, out: int = 3, seed: int = 0, hidden: int = 16) -> Any:
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(k, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out)).eval()


def save_with(module_name: str, model: Any, example: Any, requirement: str, **kw: Any) -> Callable[[str], Any]:
    """``mlflow.<flavor>.save_model(model, path, input_example=example)`` with explicit requirements
    (MLflow would otherwise load the model in a subprocess to infer them)."""
    import importlib

    flavor = importlib.import_module(module_name)

    def save(path: str) -> None:
        flavor.save_model(model, path, input_example=example, pip_requirements=[requirement], **kw)
    return save


def train_boosters(X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Small XGBoost / LightGBM classifiers and regressors (seconds)."""
    import lightgbm as lgb
    import xgboost as xgb

    target = X[:, 0] * 2 - X[:, 3]
    return {
        "xgb_clf": xgb.XGBClassifier(n_estimators=30, max_depth=3, n_jobs=1).fit(X, y),
        "xgb_reg": xgb.XGBRegressor(n_estimators=30, max_depth=3, n_jobs=1).fit(X, target),
        "lgb_clf": lgb.LGBMClassifier(n_estimators=30, num_leaves=8, n_jobs=1, verbose=-1).fit(X, y),
        "lgb_booster": lgb.train({"objective": "regression", "num_leaves": 8, "verbose": -1, "num_threads": 1},
                                 lgb.Dataset(X, target), num_boost_round=20),
    }
