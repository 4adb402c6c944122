"""ONNX Runtime: the serving fast path for models converted by ``loopml optimize``.

A version tagged ``loopml.runtime=onnx`` is served from ``onnx/model.onnx`` in its run's
artifacts (weights ONNX keeps apart, ``model.onnx.data``, are downloaded beside it); a
model logged with MLflow's ``onnx`` flavor from its own file. If the session cannot be
built the caller falls back to the native runtime: the smoke check still decides.

The graph's inputs are either one per signature column (shape [n, 1]) or one float matrix
[n, k]; :class:`OnnxModel` feeds either from a typed DataFrame or the fast lane's matrix.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np

from loopml.serve.runtimes.base import ONNX_ARTIFACT_PATH, ONNX_FILE, ModelInfo, Runtime

CLASSES_KEY = "loopml.classes"  # JSON list, in the order of the probability columns
MISSING_KEY = "loopml.missing_string"  # what a missing string is fed as (see registry.optimize)

_DTYPES = {"tensor(double)": np.float64, "tensor(float)": np.float32, "tensor(int64)": np.int64,
           "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(string)": object}


class OnnxModel:
    """An ``onnxruntime.InferenceSession`` with the estimator surface the serving path calls."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.inputs = [(i.name, _DTYPES.get(i.type, np.float64), i.shape) for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        meta = session.get_modelmeta().custom_metadata_map
        self.classes_ = np.asarray(json.loads(meta[CLASSES_KEY])) if CLASSES_KEY in meta else None
        self.missing = meta.get(MISSING_KEY, "")
        # a single [n, k] input takes the fast lane's matrix as it is
        self.matrix_input = len(self.inputs) == 1 and len(self.inputs[0][2] or []) == 2 and self.inputs[0][2][1] != 1
        # a single tensor of another rank (images [n, 3, 32, 32]) is fed as it is, too
        self.tensor_input = len(self.inputs) == 1 and len(self.inputs[0][2] or []) not in (0, 2)

    def feed(self, X: Any) -> dict[str, np.ndarray]:
        if isinstance(X, dict):  # named tensors (a tensor signature), by the graph's input names
            try:
                return {name: np.ascontiguousarray(X[name], dtype=dtype) for name, dtype, _ in self.inputs}
            except KeyError as e:
                raise ValueError(f"missing input tensor {e.args[0]!r}") from None
        if isinstance(X, np.ndarray):
            if self.matrix_input or self.tensor_input:
                name, dtype, _ = self.inputs[0]
                return {name: np.ascontiguousarray(X, dtype=dtype)}
            # one column per input, in signature order (the converter made them in that order)
            return {name: self._column(X[:, j], dtype) for j, (name, dtype, _) in enumerate(self.inputs)}
        if self.matrix_input:
            name, dtype, _ = self.inputs[0]
            return {name: np.ascontiguousarray(np.column_stack([X[c].to_numpy() for c in X.columns]), dtype=dtype)}
        try:
            return {name: self._column(X[name].to_numpy(), dtype) for name, dtype, _ in self.inputs}
        except KeyError as e:
            raise ValueError(f"missing input column {e.args[0]!r}") from None

    def _column(self, values: np.ndarray, dtype: Any) -> np.ndarray:
        if dtype is object:
            out = np.empty(len(values), dtype=object)
            # ONNX strings cannot be missing: feed the marker the converted imputer replaces
            out[:] = [self.missing if v is None or (isinstance(v, float) and v != v) else str(v) for v in values]
            return out.reshape(-1, 1)
        return np.asarray(values, dtype=dtype).reshape(-1, 1)

    def predict_outputs(self, X: Any) -> tuple[np.ndarray, np.ndarray | None]:
        try:
            outs = self.session.run(self.output_names, self.feed(X))
        except (ValueError, TypeError):
            raise
        except Exception as e:  # noqa: BLE001 - onnxruntime's InvalidArgument/Fail: the input was refused
            raise ValueError(" ".join(str(e).split())[:300]) from None
        labels = np.asarray(outs[0])
        if labels.ndim == 2 and labels.shape[1] == 1 or self.classes_ is not None:
            labels = labels.ravel()  # one value per row; a vector per row (a network's outputs) stays
        proba = None
        if self.classes_ is not None and len(outs) > 1:
            proba = np.asarray(outs[1], dtype=np.float64)
            labels = labels.astype(self.classes_.dtype, copy=False)
        elif labels.dtype.kind == "f":
            labels = labels.astype(np.float64, copy=False)
        return labels, proba

    def predict(self, X: Any) -> np.ndarray:
        return self.predict_outputs(X)[0]

    def predict_proba(self, X: Any) -> np.ndarray:
        proba = self.predict_outputs(X)[1]
        if proba is None:
            raise ValueError("this ONNX model gives no probabilities")
        return proba


def open_session(path: str) -> Any:
    """An InferenceSession on ``path``; external weights (``.onnx.data``) are read from beside it.

    One intra-op thread: the server predicts each model's batches in one thread, and on a
    few shared cores more threads only contend (measured in benchmarks/onnx_bench.py)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxRuntime(Runtime):
    runtime_name = "onnx"

    @classmethod
    def takes(cls, info: ModelInfo) -> bool:
        # a text-embedding version's ONNX graph is its encoder only: the text runtime feeds it
        return (info.wants_onnx and "sentence_transformers" not in info.flavors) or "onnx" in info.flavors

    def load(self) -> "OnnxRuntime":
        with tempfile.TemporaryDirectory(prefix="loopml-onnx-") as tmp:
            if "onnx" in self.info.flavors:  # a model logged with MLflow's onnx flavor
                local = self.source.download(self.ref, tmp)
                path = os.path.join(local, self.info.flavors["onnx"].get("data", ONNX_FILE))
            else:
                local = self.source.download_run_artifacts(self.ref, ONNX_ARTIFACT_PATH, tmp)
                path = os.path.join(local, ONNX_FILE)
            # the session reads any external data file while it is built, so tmp may go after
            self.model_ = OnnxModel(open_session(path))
        return self
