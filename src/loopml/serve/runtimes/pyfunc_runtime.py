"""MLflow pyfunc: the fallback for any flavor no dedicated runtime takes.

Loaded through ``source.load_pyfunc(ref)`` (only ``registry/`` imports MLflow, and it
refuses pickle files there unless opted in). Regression-style output only: a pyfunc model
has no ``predict_proba``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loopml.serve.runtimes.base import ModelInfo, Runtime
from loopml.serve.runtimes.sklearn_runtime import NATIVE_FLAVORS


_INPUT_ERRORS = ("INVALID_PARAMETER_VALUE", "BAD_REQUEST")
# flavors with their own runtime: a failure there is reported, not retried through pyfunc
DEDICATED_FLAVORS = ("onnx", "pytorch", "xgboost", "lightgbm")


class PyfuncModel:
    """A loaded pyfunc model with the estimator surface the serving path calls."""

    def __init__(self, pyfunc: Any, columns: list[str]) -> None:
        self.pyfunc = pyfunc
        self.columns = columns

    def predict(self, X: Any) -> np.ndarray:
        if isinstance(X, np.ndarray) and self.columns:  # fast-lane matrix: pyfunc enforces its signature on a frame
            import pandas as pd

            X = pd.DataFrame(X, columns=self.columns)
        try:
            out = self.pyfunc.predict(X)
        except Exception as e:
            # MLflow's schema enforcement refusing the input is the client's mistake (a 4xx);
            # ModelRuntime turns ValueError into InvalidInput. Anything else is the model's.
            if type(e).__name__ == "MlflowException" and getattr(e, "error_code", "") in _INPUT_ERRORS:
                raise ValueError(" ".join(str(e).split())[:500]) from None
            raise
        out = np.asarray(out.iloc[:, 0] if hasattr(out, "iloc") and getattr(out, "ndim", 1) == 2 else out)
        return out.ravel() if out.ndim == 2 and out.shape[1] == 1 else out


class PyfuncRuntime(Runtime):
    runtime_name = "pyfunc"

    @classmethod
    def takes(cls, info: ModelInfo) -> bool:
        dedicated = any(f in info.flavors for f in (*NATIVE_FLAVORS, *DEDICATED_FLAVORS))
        return info.known and "python_function" in info.flavors and not dedicated

    def load(self) -> "PyfuncRuntime":
        sig = self.source.signature(self.ref) or {}
        # a column signature's names, for the fast lane's float matrix; tensors arrive as arrays
        columns = [c["name"] for c in sig.get("inputs") or [] if c.get("name") and c.get("type") != "tensor"]
        self.model_ = PyfuncModel(self.source.load_pyfunc(self.ref), columns)
        return self
