"""The model-runtime contract: one kind of model file in, one estimator-like object out.

In the shape of MLServer's runtimes and scikit-learn's estimator contract: ``__init__``
only stores the source and the version reference; :meth:`Runtime.load` does the I/O and
sets the fitted ``model_`` (anything with ``predict(X)``, and for classifiers
``predict_proba(X)`` and ``classes_``, where ``X`` is a typed DataFrame or, on the fast
lane, an (n, k) float matrix in signature order); :meth:`Runtime.predict` checks it is
loaded and returns the outputs. Metadata (input columns) comes from the version's
signature, which :class:`~loopml.serve.runtime.ModelRuntime` reads for every kind alike.

Which runtime a version gets is decided by one table (:func:`runtimes_for`) from its
MLmodel file's flavors and its ``loopml.runtime`` tag. Nothing heavy is imported here.
"""

from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from loopml.errors import UnsupportedModelFlavor

RUNTIME_TAG = "loopml.runtime"
ONNX_REFUSED_TAG = "loopml.onnx_refused"
ONNX_ARTIFACT_PATH = "onnx"  # run artifact folder beside the native model: model.onnx (+ model.onnx.data)
ONNX_FILE = "model.onnx"


@dataclass(frozen=True)
class ModelInfo:
    """What a version's MLmodel file and tags say about its kind.

    ``known`` is False for sources that cannot show an MLmodel file (in-memory registries
    holding fitted scikit-learn objects); those get the scikit-learn runtime, as before."""

    flavors: dict[str, dict] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    known: bool = False

    @property
    def wants_onnx(self) -> bool:
        return self.tags.get(RUNTIME_TAG) == "onnx"


def model_info(source: Any, ref: Any) -> ModelInfo:
    """Read ``ref``'s MLmodel file through ``source.download(ref, dst, "MLmodel")`` (YAML, read
    without MLflow); sources without ``download`` give an unknown :class:`ModelInfo`."""
    tags = dict(getattr(ref, "tags", None) or {})
    download = getattr(source, "download", None)
    if download is None:
        return ModelInfo(tags=tags)
    import yaml

    with tempfile.TemporaryDirectory(prefix="loopml-mlmodel-") as tmp:
        with open(download(ref, tmp, "MLmodel"), encoding="utf-8") as f:
            meta = yaml.safe_load(f) or {}
    return ModelInfo(flavors=dict(meta.get("flavors") or {}), tags=tags, known=True)


class Runtime(ABC):
    """One kind of model. Subclasses set ``runtime_name``, say which versions they take
    (:meth:`takes`) and implement :meth:`load`."""

    runtime_name: ClassVar[str] = ""

    def __init__(self, source: Any, ref: Any, info: ModelInfo | None = None) -> None:
        self.source = source
        self.ref = ref
        self.info = info or ModelInfo()
        self.model_: Any = None

    @classmethod
    @abstractmethod
    def takes(cls, info: ModelInfo) -> bool:
        """True when this runtime can serve a version with this MLmodel file and tags."""

    @abstractmethod
    def load(self) -> "Runtime":
        """Do the I/O: set ``model_`` and return ``self``."""

    def predict(self, X: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """(labels or values, probabilities or None) for a batch ``X``."""
        if self.model_ is None:
            raise RuntimeError(f"{type(self).__name__} for '{self.ref.name}' is not loaded; call load() first")
        both = getattr(self.model_, "predict_outputs", None)
        if both is not None:
            return both(X)
        proba = None
        if getattr(self.model_, "classes_", None) is not None and hasattr(self.model_, "predict_proba"):
            proba = np.asarray(self.model_.predict_proba(X))
        return np.asarray(self.model_.predict(X)), proba


_RUNTIMES: list[type[Runtime]] = []


def register_runtime(cls: type[Runtime]) -> type[Runtime]:
    """Add a runtime to the table; earlier registrations are preferred."""
    if cls not in _RUNTIMES:
        _RUNTIMES.append(cls)
    return cls


def runtimes_for(name: str, version: str, info: ModelInfo) -> list[type[Runtime]]:
    """The runtimes that take this version, most preferred first (the caller falls back along
    the list when one fails to load or to pass the smoke check). Raises
    :class:`~loopml.errors.UnsupportedModelFlavor` when none does."""
    import loopml.serve.runtimes  # noqa: F401 - registers the built-in kinds

    found = [r for r in _RUNTIMES if r.takes(info)]
    if not found:
        raise UnsupportedModelFlavor(name, str(version), sorted(info.flavors))
    return found
