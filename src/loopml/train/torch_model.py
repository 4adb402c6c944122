"""A trained PyTorch tabular model behind a scikit-learn-like face, and its safe file format.

:class:`TorchTabularModel` holds the fitted preprocessing (a scikit-learn ColumnTransformer)
and the network; ``predict`` / ``predict_proba`` / ``classes_`` are what the evaluation, the
registry's check and today's serving runtime call (a thin wrapper until a dedicated torch
runtime exists).

Saved as a folder that loads without unpickling anything:
- ``state_dict.pt``: the network's tensors, read with ``torch.load(weights_only=True)``;
- ``preprocess.skops``: the preprocessing, read with skops trusting only scikit-learn and
  NumPy types;
- ``torch_model.json``: the module's import path and constructor arguments, the task, the
  classes and the target scaling.
The module class is imported by its path and must be an ``nn.Module``.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any

import numpy as np
import torch

STATE_FILE = "state_dict.pt"
PREPROCESS_FILE = "preprocess.skops"
META_FILE = "torch_model.json"
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "builtins.")


def import_module_class(path: str) -> type:
    """``package.module:ClassName`` -> the class; ImportError/TypeError say why not."""
    module_name, _, attr = path.partition(":")
    cls = getattr(importlib.import_module(module_name), attr, None)
    if cls is None:
        raise ImportError(f"module '{module_name}' has no attribute '{attr}'")
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise TypeError(f"'{path}' is not a torch.nn.Module subclass")
    return cls


class TorchTabularModel:
    """A fitted network plus its preprocessing; constructing it does no I/O."""

    def __init__(self, preprocess: Any, module: torch.nn.Module, *, module_path: str, init_args: dict[str, Any],
                 task: str, classes: np.ndarray | None = None, y_mean: float = 0.0, y_std: float = 1.0) -> None:
        self.preprocess = preprocess
        self.module = module.eval()
        self.module_path = module_path
        self.init_args = init_args
        self.task = task
        if classes is not None:
            self.classes_ = np.asarray(classes)
        self.y_mean, self.y_std = y_mean, y_std

    def transform(self, X: Any) -> np.ndarray:
        return np.asarray(self.preprocess.transform(X), dtype=np.float32)

    def _forward(self, X: Any) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(self.transform(X))).numpy()

    def predict_proba(self, X: Any) -> np.ndarray:
        if self.task != "classification":
            raise AttributeError("predict_proba: a regression model has no class probabilities")
        p = torch.softmax(torch.from_numpy(self._forward(X)).double(), dim=1).numpy()
        return p / p.sum(axis=1, keepdims=True)  # exactly 1 per row in float64 (metrics check it)

    def predict(self, X: Any) -> np.ndarray:
        out = self._forward(X)
        if self.task == "classification":
            return self.classes_[np.argmax(out, axis=1)]
        return out[:, 0].astype(np.float64) * self.y_std + self.y_mean

    def get_params(self) -> dict[str, Any]:
        return {"module": self.module_path, **{k: v for k, v in self.init_args.items()}}

    # -- the file format ---------------------------------------------------------------------
    def save(self, folder: str) -> None:
        import skops.io as sio

        os.makedirs(folder, exist_ok=True)
        torch.save(self.module.state_dict(), os.path.join(folder, STATE_FILE))
        sio.dump(self.preprocess, os.path.join(folder, PREPROCESS_FILE))
        classes = getattr(self, "classes_", None)
        meta = {"format": 1, "module": self.module_path, "init_args": self.init_args, "task": self.task,
                "classes": None if classes is None else classes.tolist(),
                "classes_dtype": None if classes is None else classes.dtype.str,
                "y_mean": self.y_mean, "y_std": self.y_std, "torch_version": str(torch.__version__)}
        with open(os.path.join(folder, META_FILE), "w") as f:
            json.dump(meta, f)


def load_model(folder: str) -> TorchTabularModel:
    """Read a folder written by :meth:`TorchTabularModel.save` without unpickling."""
    import skops.io as sio

    with open(os.path.join(folder, META_FILE)) as f:
        meta = json.load(f)
    pre_path = os.path.join(folder, PREPROCESS_FILE)
    types = sio.get_untrusted_types(file=pre_path)
    foreign = [t for t in types if not t.startswith(TRUSTED_PREFIXES)]
    if foreign:
        raise TypeError(f"{PREPROCESS_FILE} holds types loopml does not trust: {', '.join(foreign[:5])}")
    preprocess = sio.load(pre_path, trusted=types)
    cls = import_module_class(meta["module"])
    module = cls(**meta["init_args"])
    module.load_state_dict(torch.load(os.path.join(folder, STATE_FILE), weights_only=True))
    classes = meta.get("classes")
    if classes is not None:
        classes = np.asarray(classes, dtype=np.dtype(meta["classes_dtype"]) if meta.get("classes_dtype") else None)
    return TorchTabularModel(preprocess, module, module_path=meta["module"], init_args=meta["init_args"],
                             task=meta["task"], classes=classes, y_mean=meta["y_mean"], y_std=meta["y_std"])


def _load_pyfunc(path: str) -> TorchTabularModel:
    """MLflow's ``python_function`` loader hook (``loader_module``): the same safe loader."""
    return load_model(path)
