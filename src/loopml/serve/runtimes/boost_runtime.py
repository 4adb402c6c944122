"""XGBoost and LightGBM models logged with ``mlflow.xgboost`` / ``mlflow.lightgbm``.

Read from the libraries' own file formats, never unpickled: an XGBoost model (any class, its
``model.ubj``/``.json``/``.xgb`` through ``load_model``), a LightGBM Booster (``model.lgb``
text). A LightGBM scikit-learn-API model (``LGBMClassifier``) is a scikit-learn file: skops
is read trusting only LightGBM, scikit-learn and NumPy types; pickle/cloudpickle is refused
unless unsafe pickle is allowed. The model class named in the MLmodel file must belong to
the library (it is imported and constructed).

Prediction runs on one thread (``n_jobs=1`` / ``num_threads=1``): the server predicts each
model's batches in one thread, and small batches gain nothing from more.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from typing import Any

import numpy as np

from loopml.errors import UnsafeModelFormat
from loopml.serve.runtimes.base import ModelInfo, Runtime

BOOST_FLAVORS = ("xgboost", "lightgbm")
_TRUSTED = ("lightgbm.", "sklearn.", "numpy.", "builtins.", "collections.")


class BoostModel:
    """A scikit-learn-API booster (predict, predict_proba, classes_) or a raw Booster (values)."""

    def __init__(self, model: Any, flavor: str) -> None:
        self.model = model
        self.flavor = flavor
        self.raw = not hasattr(model, "get_params")
        classes = getattr(model, "classes_", None)
        if classes is not None and hasattr(model, "predict_proba"):
            self.classes_ = np.asarray(classes)

    def predict_outputs(self, X: Any) -> tuple[np.ndarray, np.ndarray | None]:
        if self.raw:
            return self._raw(X), None
        classes = getattr(self, "classes_", None)
        if classes is None:
            return np.asarray(self.model.predict(X), dtype=np.float64), None
        proba = np.asarray(self.model.predict_proba(X), dtype=np.float64)
        # both libraries' predict is the class of highest probability: one call gives both
        return classes[np.argmax(proba, axis=1)], proba

    def _raw(self, X: Any) -> np.ndarray:
        if self.flavor == "xgboost":
            import xgboost as xgb

            return np.asarray(self.model.predict(xgb.DMatrix(X)), dtype=np.float64)
        return np.asarray(self.model.predict(X, num_threads=1), dtype=np.float64)

    def predict(self, X: Any) -> np.ndarray:
        return self.predict_outputs(X)[0]

    def predict_proba(self, X: Any) -> np.ndarray:
        proba = self.predict_outputs(X)[1]
        if proba is None:
            raise AttributeError("predict_proba: this model gives no class probabilities")
        return proba


def _library_class(path: str, library: str) -> type:
    module, _, name = path.rpartition(".")
    if not module.startswith(library + ".") and module != library:
        raise TypeError(f"model class '{path}' is not a {library} class")
    return getattr(importlib.import_module(module), name)


def load_boost_folder(folder: str, conf: dict, flavor: str, name: str, version: str, allow_unsafe: bool) -> Any:
    path = os.path.join(folder, conf.get("data", ""))
    if flavor == "xgboost":
        model = _library_class(conf.get("model_class", "xgboost.core.Booster"), "xgboost")()
        model.load_model(path)
        if hasattr(model, "set_params"):
            model.set_params(n_jobs=1)
        else:
            model.set_param({"nthread": 1})
        return model
    cls = conf.get("model_class", "lightgbm.basic.Booster")
    import lightgbm as lgb

    if cls == "lightgbm.basic.Booster":
        return lgb.Booster(model_file=path)
    fmt = conf.get("serialization_format", "cloudpickle")
    if fmt == "skops":
        import skops.io as sio

        types = sio.get_untrusted_types(file=path)
        foreign = [t for t in types if not t.startswith(_TRUSTED)]
        if foreign:
            raise TypeError(f"its skops file holds types loopml does not trust: {', '.join(foreign[:5])}")
        model = sio.load(path, trusted=types)
    elif not allow_unsafe:
        raise UnsafeModelFormat(name, version, fmt)
    else:
        import pickle  # a cloudpickle file is a pickle stream (it imports cloudpickle itself if it needs it)

        with open(path, "rb") as f:
            model = pickle.load(f)  # noqa: S301 - the caller allowed unsafe pickle for this trusted model
    model.set_params(n_jobs=1)
    return model


class BoostRuntime(Runtime):
    runtime_name = "boost"

    @classmethod
    def takes(cls, info: ModelInfo) -> bool:
        return any(f in info.flavors for f in BOOST_FLAVORS)

    def load(self) -> "BoostRuntime":
        flavor = next(f for f in BOOST_FLAVORS if f in self.info.flavors)
        allow = bool(getattr(self.source, "allow_unsafe_pickle", False))
        with tempfile.TemporaryDirectory(prefix="loopml-boost-") as tmp:
            local = self.source.download(self.ref, tmp)
            model = load_boost_folder(local, self.info.flavors[flavor], flavor, self.ref.name, str(self.ref.version),
                                      allow)
        self.model_ = BoostModel(model, flavor)
        self.runtime_name = flavor  # "xgboost" or "lightgbm": what `loopml serve` lists
        return self
