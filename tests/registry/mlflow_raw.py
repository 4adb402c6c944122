"""Helpers for tests that put versions into a workspace straight through MLflow (not loopml),
as a user or another tool could: any serialization format, any input example, any files."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pandas as pd


def frame(n: int = 40) -> tuple[pd.DataFrame, pd.Series]:
    X = pd.DataFrame({"a": [float(i % 7) for i in range(n)], "b": [float(i % 3) for i in range(n)]})
    return X, (X["a"] + X["b"] > 4).astype(int)


def fitted() -> Any:
    from sklearn.linear_model import LogisticRegression

    X, y = frame()
    return LogisticRegression().fit(X, y)


def register_raw(ws, name: str, model: Any, *, fmt: str = "skops", input_example: Any = None) -> tuple[str, Path]:
    """Save ``model`` with mlflow.sklearn in format ``fmt``, log it to a run and register it with a
    plain MlflowClient. Returns (version, local folder of the version's files)."""
    import mlflow.sklearn
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=ws.tracking_uri, registry_uri=ws.tracking_uri)
    exp = client.get_experiment_by_name("raw")
    exp_id = exp.experiment_id if exp else client.create_experiment("raw", artifact_location=(ws.home / "raw").as_uri())
    run = client.create_run(exp_id)
    local = ws.home.parent / f"raw-{uuid.uuid4().hex[:8]}"
    kw: dict[str, Any] = {}
    if fmt == "skops":
        import skops.io as sio

        kw["skops_trusted_types"] = list(sio.get_untrusted_types(data=sio.dumps(model)))
    # explicit requirements: MLflow would otherwise load the model in a subprocess to infer them
    mlflow.sklearn.save_model(model, str(local), serialization_format=fmt, input_example=input_example,
                              pip_requirements=["scikit-learn"], **kw)
    client.log_artifacts(run.info.run_id, str(local), "model")
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except Exception:  # noqa: BLE001 - exists already
        pass
    mv = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    stored = Path(run.info.artifact_uri.removeprefix("file://")) / "model"
    return str(mv.version), stored


def _rebuild(marker: str) -> Any:
    """What unpickling a :class:`Payload` runs: it leaves a marker file (the 'payload')."""
    Path(marker).write_text("ran")
    return fitted()


class Payload:
    """An object whose pickle runs code on load, as a malicious model file would."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (_rebuild, (self.marker,))
