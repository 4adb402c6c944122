"""The model runtime: one loaded model version, predicting on column batches.

A request's inputs arrive as :class:`Rows` (column name -> list of ``n`` values, already
in signature order). The runtime converts a whole batch to typed NumPy columns once,
builds one DataFrame for the scikit-learn pipeline (which may need column names), and
returns a :class:`Prediction` of NumPy arrays. Nothing here knows a wire format.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from typing import Any

import numpy as np

from loopml.errors import InvalidInput, ModelCheckFailed, RegistryUnavailable, UnsafeModelFormat
from loopml.serve.runtimes.columns import (COLUMN_TYPES, InputColumn, Prediction, Predictor, Rows, _datatype_of,
                                           _to_column)
from loopml.serve.tensors import given_input, read_tensor_signature, tensor_smoke_rows, typed_tensors

__all__ = ["COLUMN_TYPES", "InputColumn", "ModelRuntime", "Prediction", "Predictor", "Rows", "_datatype_of",
           "_to_column"]

# Classifiers whose ``predict`` is the class of highest ``predict_proba`` (by definition, or
# through a monotone link: LogisticRegression's sigmoid/softmax of the decision function).
# For them one predict_proba call gives both outputs and saves sklearn's per-call input
# checks (~150 µs). The two can only disagree on an exact tie, e.g. a logistic decision
# value within ~1e-16 of 0, where predict_proba rounds to 0.5 and argmax takes the first
# class. ModelRuntime.load also checks agreement on probe rows before using it.
ARGMAX_CLASSIFIERS = frozenset({
    "LogisticRegression", "RandomForestClassifier", "ExtraTreesClassifier", "DecisionTreeClassifier",
    "ExtraTreeClassifier", "HistGradientBoostingClassifier", "GaussianNB",
})


class ModelRuntime:
    """One model version in memory. ``__init__`` stores; :meth:`load` does the I/O.

    ``source`` is anything with ``load_native(ref)`` and ``signature(ref)`` (the
    :class:`~loopml.registry.client.Registry`); ``ref`` is its ``ModelVersionRef``.
    """

    def __init__(self, source: Any, ref: Any, *, predict_in_thread: bool = True,
                 use_compiled: bool | None = None, runtime: str = "auto") -> None:
        self.source = source
        self.pinned = runtime  # ServeSettings.runtime: "auto" or the one runtime allowed
        self.ref = ref
        self.name: str = ref.name
        self.version: str = str(ref.version)
        self.predict_in_thread = predict_in_thread
        self.model: Any = None
        self.inputs: list[InputColumn] = []
        # what the signature says the model takes: "columns" (a DataFrame), "tensors" (one
        # array, or a dict of named arrays when the tensors have names) or "none" (no
        # signature: each request's input is passed as given)
        self.layout = "columns"
        self.named_tensors = False
        self.classes: np.ndarray | None = None
        self.load_seconds: float | None = None
        self._head: Any = None
        self._tail: Any = None
        self._head_steps: list | None = None
        self.argmax_predict = False
        self._executor = None
        self.fast = False
        # ServeSettings.compiled (LOOPML_SERVE_COMPILED=0) turns the compiled fast path off:
        # an escape hatch, and the benchmark's A/B switch
        self.use_compiled = True if use_compiled is None else use_compiled
        self.compiled: Any = None
        # which runtime serves it ("sklearn", "onnx", "pyfunc"), and why a preferred one gave way
        self.runtime_name: str | None = None
        self.fallback_reason: str | None = None
        self.predict_shape: list[int] = [-1]  # [-1, 384] for embeddings: learnt from the smoke prediction

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> "ModelRuntime":
        """Pick the model's runtime from its MLmodel file and tags (see
        :func:`loopml.serve.runtimes.runtimes_for`), load the model and signature, then check
        it: a smoke prediction through the serving path on its input example (else a row
        built from its signature). A runtime that fails to load or to pass the check gives
        way to the next one that takes the version (an ONNX version falls back to its native
        model, and ``fallback_reason`` says why); when the last fails too this raises
        :class:`~loopml.errors.ModelCheckFailed`: a version is never served unchecked."""
        from loopml.serve.runtimes import model_info, runtimes_for

        t0 = time.perf_counter()
        info = model_info(self.source, self.ref)
        candidates = pinned_runtimes(self.name, self.version, self.pinned, runtimes_for(self.name, self.version, info),
                                     info)
        for i, kind in enumerate(candidates):
            try:
                self._load_with(kind(self.source, self.ref, info))
                break
            except (RegistryUnavailable, UnsafeModelFormat):
                raise  # says nothing about this runtime: the next would fail the same way
            except Exception as e:  # noqa: BLE001 - try the next runtime; the last one's error is raised
                if i == len(candidates) - 1:
                    if isinstance(e, ModelCheckFailed):
                        raise
                    reason = " ".join(str(e).split())[:300]
                    raise ModelCheckFailed(self.name, self.version,
                                           f"{kind.runtime_name} runtime did not load: {type(e).__name__}: {reason}") from None
                self.fallback_reason = f"{kind.runtime_name} runtime: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
        self.load_seconds = time.perf_counter() - t0
        return self

    def _load_with(self, kind: Any) -> None:
        self.model = kind.load().model_
        self.runtime_name = kind.runtime_name
        self.compiled = None
        self.classes = None
        self._read_signature(self.source.signature(self.ref) or {})
        steps = getattr(self.model, "steps", None)
        if steps and len(steps) > 1:
            # transform once, then predict and predict_proba on the final estimator
            self._head, self._tail = self.model[:-1], self.model[-1]
            # Pipeline.transform spends ~100 µs per call on metadata routing; with no
            # parameters to route, applying the steps in order is the same computation.
            self._head_steps = [t for _, t in self._head.steps if t is not None and t != "passthrough"]
        else:
            self._head, self._tail = None, self.model
        classes = getattr(self._tail, "classes_", None)
        if classes is not None and hasattr(self._tail, "predict_proba"):
            self.classes = np.asarray(classes)
        want_argmax = type(self._tail).__name__ in ARGMAX_CLASSIFIERS and self.classes is not None
        self.argmax_predict = want_argmax
        self.fast = self._fast_lane_agrees()
        if self.fast and self.use_compiled:
            # validation-free NumPy for known linear pipelines; adopted only if it matches
            # scikit-learn on probe rows (see loopml.serve.compiled)
            from loopml.serve.compiled import compile_pipeline

            head = self._head_steps if self._head_steps is not None else ([] if self._head is None else None)
            if head is not None:
                self.compiled = compile_pipeline(head, self._tail, len(self.inputs))
        self.smoke_check()
        if want_argmax and not self.argmax_predict and not self.fast:
            # Inputs the fast lane cannot take (text columns) skipped its argmax probe; the
            # smoke rows decide instead, so such models also predict with one pass, not two.
            self.argmax_predict = self._argmax_agrees(self.smoke_rows()[0])

    def _read_signature(self, sig: dict) -> None:
        specs = sig.get("inputs") or []
        self.layout, self.named_tensors = "columns", False
        tensors = read_tensor_signature(specs)
        if tensors is not None:
            self.inputs, self.named_tensors = tensors
            self.layout = "tensors"
            return
        inputs = [InputColumn(c["name"], c.get("type", "double")) for c in specs if c.get("name")]
        if not inputs and hasattr(self.model, "feature_names_in_"):
            inputs = [InputColumn(str(c), "double") for c in self.model.feature_names_in_]
        self.inputs = inputs
        if not inputs:
            self.layout = "none"

    def _argmax_agrees(self, rows: Rows) -> bool:
        try:
            slow = self._predict_on(self.model_input(rows)[0])
        except Exception:  # noqa: BLE001 - keep the two-call path
            return False
        return slow.proba is not None and bool(np.array_equal(slow.predict, self.classes[np.argmax(slow.proba, axis=1)]))

    def _fast_lane_agrees(self) -> bool:
        """True when every input is numeric and the model gives the same answers on a plain
        float matrix as on a DataFrame (pandas and sklearn's per-call checks cost ~1 ms;
        the matrix path about a third of that). Checked on random rows, so a pipeline that
        selects columns by name simply stays on the DataFrame path."""
        want_argmax, self.argmax_predict = self.argmax_predict, False
        if self.layout != "columns" or not self.inputs or not all(c.numeric for c in self.inputs):
            return False
        rng = np.random.default_rng(0)
        n = 16
        cols = {c.name: (rng.integers(0, 5, n) if c.type in ("long", "integer") else rng.normal(size=n)).tolist()
                for c in self.inputs}
        rows = Rows(cols, n)
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        try:
            slow = self._predict_on(self.frame(rows))
            fast = self._predict_on(self.matrix(rows))
        except Exception:  # noqa: BLE001 - any failure means: keep the DataFrame path
            return False
        if want_argmax:
            # take predict from predict_proba only when, on these rows too, they agree
            self.argmax_predict = bool(np.array_equal(slow.predict, self.classes[np.argmax(slow.proba, axis=1)]))
        same = np.array_equal(slow.predict, fast.predict)
        if slow.proba is not None:
            same = same and fast.proba is not None and np.allclose(slow.proba, fast.proba, rtol=0, atol=1e-12)
        return bool(same)

    def smoke_rows(self) -> tuple[Rows, str]:
        """The rows of the smoke prediction and where they come from: the version's logged input
        example when the source can give it (``source.input_example(ref)``), else one row
        synthesised from the signature (0, False, "")."""
        example = None
        getter = getattr(self.source, "input_example", None)
        if getter is not None:
            example = getter(self.ref)
        if self.layout != "columns":
            return tensor_smoke_rows(self.layout, self.inputs, self.model, example)
        if example is not None and len(example):
            import pandas as pd

            frame = pd.DataFrame(example)
            missing = [c for c in self.column_names if c not in frame.columns]
            if not missing:
                cols = {c: frame[c].tolist() for c in self.column_names}
                return Rows(cols, len(frame)), "its input example"
        sample = {"double": 0.0, "float": 0.0, "long": 0, "integer": 0, "boolean": False}
        return Rows({c.name: [sample.get(c.type, "")] for c in self.inputs}, 1), "a row built from its signature"

    def smoke_check(self) -> None:
        """Predict on :meth:`smoke_rows` (this also warms the model up); raise ModelCheckFailed
        if it fails or answers the wrong number of rows."""
        try:
            rows, what = self.smoke_rows()
        except Exception as e:  # noqa: BLE001
            raise ModelCheckFailed(self.name, self.version, f"no rows to check it with: {type(e).__name__}: {e}") from None
        try:
            pred = self.predict_sync(rows)
            if len(pred.predict) != rows.n:
                raise ValueError(f"{len(pred.predict)} predictions for {rows.n} rows")
            self.predict_shape = [-1, *np.shape(pred.predict)[1:]]
        except Exception as e:  # noqa: BLE001 - whatever it is, this version cannot serve
            reason = " ".join(str(e).split())[:300]
            raise ModelCheckFailed(self.name, self.version, f"smoke prediction on {what} failed: {reason}") from None

    @property
    def is_classifier(self) -> bool:
        return self.classes is not None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.inputs]

    @property
    def has_signature(self) -> bool:
        return self.layout != "none"

    def predict_datatype(self) -> str:
        if self.classes is not None:
            return _datatype_of(self.classes.dtype)
        # a model may say what it answers (text embeddings: FP32 vectors)
        datatype = getattr(self.model, "predict_datatype", None)
        return datatype if isinstance(datatype, str) else "FP64"

    # -- predicting ------------------------------------------------------------------------

    def frame(self, rows: Rows):
        """Typed DataFrame of a batch, columns in signature order (raises InvalidInput)."""
        import pandas as pd

        return pd.DataFrame(self.columns(rows), copy=False)

    def columns(self, rows: Rows) -> dict[str, np.ndarray]:
        """Typed 1-d arrays of a batch, in signature order (raises InvalidInput)."""
        data = {}
        for col in self.inputs:
            values = rows.columns.get(col.name)
            if values is None:
                raise InvalidInput(f"missing input '{col.name}'; expected {self.column_names}")
            if len(values) != rows.n:
                raise InvalidInput(f"input '{col.name}' has {len(values)} values, expected {rows.n}")
            data[col.name] = _to_column(col, values)
        return data

    def matrix(self, rows: Rows) -> np.ndarray:
        """(n, k) float64 matrix of an all-numeric batch (the fast lane)."""
        try:
            X = np.array([rows.columns[c.name] for c in self.inputs], dtype=np.float64)
        except KeyError as e:
            raise InvalidInput(f"missing input {e.args[0]!r}; expected {self.column_names}") from None
        except (ValueError, TypeError, OverflowError) as e:
            raise InvalidInput(f"inputs expect numbers: {e}") from None
        if X.ndim != 2 or X.shape[1] != rows.n:
            raise InvalidInput(f"every input needs {rows.n} numeric values, one per row")
        for j, c in enumerate(self.inputs):
            if c.type in ("long", "integer"):
                col = X[j]
                if not np.all(np.isfinite(col)) or not np.all(col == np.floor(col)):
                    raise InvalidInput(f"input '{c.name}' expects {c.type} values: not all values are integers")
        return X.T

    def tensors(self, rows: Rows) -> dict[str, np.ndarray]:
        """Typed (n, ...) arrays of a batch for a tensor signature (raises InvalidInput)."""
        return typed_tensors(self.name, self.inputs, rows)

    def model_input(self, rows: Rows) -> tuple[Any, Any]:
        """(what the model is called with, what the prediction log records) for a batch."""
        if self.layout == "tensors":
            arrays = self.tensors(rows)
            return (arrays if self.named_tensors else arrays[self.inputs[0].name]), arrays
        if self.layout == "none":
            return given_input(rows)
        if self.fast:
            X = self.matrix(rows)
            return X, X
        import pandas as pd

        cols = self.columns(rows)
        return pd.DataFrame(cols, copy=False), cols

    def predict_sync(self, rows: Rows) -> Prediction:
        if self.fast:
            X = self.matrix(rows)
            pred = self._predict_compiled(X) if self.compiled is not None else self._predict_on(X)
            pred.inputs = X
            return pred
        X, seen = self.model_input(rows)
        pred = self._predict_on(X)
        pred.inputs = seen
        return pred

    def _predict_on(self, X) -> Prediction:
        try:
            Xt = X
            if self._head_steps is not None:
                for step in self._head_steps:
                    Xt = step.transform(Xt)
            elif self._head is not None:
                Xt = self._head.transform(X)
            both = getattr(self._tail, "predict_outputs", None)
            if both is not None:  # one session run gives labels and probabilities (ONNX)
                labels, proba = both(Xt)
                return Prediction(labels, proba if self.classes is not None else None)
            if self.classes is not None:
                proba = np.asarray(self._tail.predict_proba(Xt))
                if self.argmax_predict:
                    return Prediction(self.classes[np.argmax(proba, axis=1)], proba)
                pred = np.asarray(self._tail.predict(Xt))
                return Prediction(pred, proba)
            return Prediction(np.asarray(self._tail.predict(Xt)), None)
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise InvalidInput(f"model '{self.name}' v{self.version} rejected the input: {e}") from None

    def _predict_compiled(self, X: np.ndarray) -> Prediction:
        try:
            out = self.compiled.predict(X)
        except ValueError as e:
            raise InvalidInput(f"model '{self.name}' v{self.version} rejected the input: {e}") from None
        return Prediction(out.predict, out.proba)

    async def predict(self, rows: Rows) -> Prediction:
        if not self.predict_in_thread:
            return self.predict_sync(rows)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._get_executor(), self.predict_sync, rows)

    def _get_executor(self):
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"predict-{self.name}-v{self.version}")
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None



# ServeSettings.runtime -> the runtime classes (by runtime_name) that may serve under that pin
_PINS = {"sklearn": ("sklearn",), "onnx": ("onnx", "text_embedding_onnx"), "pyfunc": ("pyfunc",),
         "torch": ("torch",), "xgboost": ("boost",), "lightgbm": ("boost",),
         "text-embedding": ("text_embedding_onnx", "text_embedding")}


def pinned_runtimes(name: str, version: str, pin: str, candidates: list, info: Any) -> list:
    """The candidates a pinned runtime leaves (all of them for "auto"). Nothing left is a failed
    check: the version is never served by another runtime than the one asked for."""
    if pin == "auto":
        return candidates
    kept = [k for k in candidates if k.runtime_name in _PINS[pin]]
    if pin in ("xgboost", "lightgbm") and pin not in info.flavors:
        kept = []
    if not kept:
        takes = ", ".join(k.runtime_name for k in candidates)
        raise ModelCheckFailed(name, version, f"the serving runtime is pinned to '{pin}' (LOOPML_SERVE_RUNTIME), "
                                              f"which does not take it (flavors {sorted(info.flavors)}; runtimes "
                                              f"that do: {takes}); unpin it (auto) or serve another version")
    return kept
