"""The trainer contract: spec + training frame + tracking run -> fitted model and its flavor.

A trainer is anything with ``fit(spec, train, run) -> TrainedModel``. ``run`` is the
tracking run the pipeline opened (``log_params``/``log_metrics``/``set_tags``), or None when
nothing is tracked (tests, tuning trials); ``workspace`` (default: from the environment) is
where a distributed back end keeps checkpoints. Built-ins are picked by ``model.kind`` and imported
only when used, so this module imports nothing heavy: ``sklearn`` (scikit-learn estimator by
import path, :mod:`loopml.train.sklearn_trainer`) and ``torch`` (a PyTorch module on tabular
data, :mod:`loopml.train.torch_trainer`).

The flavor tells the registry how to log and load the model: ``sklearn`` is logged with
skops; ``loopml_torch`` is a state_dict (loaded with ``weights_only=True``) plus the module's
import path and the skops-saved preprocessing (see :mod:`loopml.train.torch_model`). Neither
is a pickle.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas as pd

    from loopml.spec import ProjectSpec

FLAVOR_SKLEARN = "sklearn"
FLAVOR_TORCH = "loopml_torch"


@dataclass
class TrainedModel:
    """A fitted model (``predict``, and ``predict_proba`` + ``classes_`` for classifiers)."""

    model: Any
    flavor: str
    features: list[str]
    numeric: list[str]
    categorical: list[str]
    params: dict[str, Any]
    train_rows: int
    history: dict[str, Any] = field(default_factory=dict)  # per-epoch metrics, restarts, ...


class RunLike(Protocol):
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], prefix: str = "") -> None: ...
    def set_tags(self, tags: dict[str, Any]) -> None: ...


class Trainer(Protocol):
    def fit(self, spec: "ProjectSpec", train: "pd.DataFrame", run: RunLike | None = None, *,
            workspace: Any = None) -> TrainedModel: ...


# model.kind -> "module:Class" of its trainer (imported on use)
TRAINERS: dict[str, str] = {
    "sklearn": "loopml.train.sklearn_trainer:SklearnTrainer",
    "torch": "loopml.train.torch_trainer:TorchTrainer",
}


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def trainer_for(spec: "ProjectSpec") -> Trainer:
    """The trainer of ``spec.model.kind`` (constructed, no I/O)."""
    return _load(TRAINERS[spec.model.kind])()


def check_model_spec(spec: "ProjectSpec", source: str) -> None:
    """Check ``model`` beyond its schema (estimator/module importable, params accepted);
    raises :class:`~loopml.errors.SpecError` naming the field."""
    cls = _load(TRAINERS[spec.model.kind])
    cls.check_spec(spec, source)
