"""The data a model runtime speaks: input rows by column, typed columns, predictions.

Nothing here knows a wire format or a model kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from loopml.errors import InvalidInput

# MLflow column type -> (NumPy dtype, OIP datatype)
COLUMN_TYPES: dict[str, tuple[Any, str]] = {
    "double": (np.float64, "FP64"),
    "float": (np.float32, "FP32"),
    "long": (np.int64, "INT64"),
    "integer": (np.int32, "INT32"),
    "boolean": (np.bool_, "BOOL"),
    "string": (object, "BYTES"),
    "binary": (object, "BYTES"),
    "datetime": (object, "BYTES"),
}


@dataclass(slots=True)
class Rows:
    """``n`` input rows, as column name -> list (or array) of values, plus per-row ids.

    A tensor input is one entry too: an (n, ...) array, or a list of ``n`` per-row values
    (what the batcher's concatenation makes of several requests). ``layout`` matters only
    for a model without a signature, whose input is passed as given: ``"frame"`` (a body in
    a table layout: one DataFrame) or ``"tensors"`` (one array, or a dict of named arrays).
    """

    columns: dict[str, Any]
    n: int
    ids: list[str | None] | None = None
    layout: str = ""


@dataclass(slots=True)
class Prediction:
    """Outputs for ``n`` rows: ``predict`` (n,) and, for classifiers, ``proba`` (n, k).

    ``inputs`` is what the model saw, typed (the prediction log records it without
    converting again): an (n, k) float matrix in signature order on the fast lane, else
    a dict of column name -> 1-d array. Slices leave it out.
    """

    predict: np.ndarray
    proba: np.ndarray | None
    inputs: Any = None

    def slice(self, start: int, stop: int) -> "Prediction":
        return Prediction(self.predict[start:stop], None if self.proba is None else self.proba[start:stop])


class Predictor(Protocol):
    """What the server calls: the runtime, the batcher and every wrapper satisfy it."""

    async def predict(self, rows: Rows) -> Prediction: ...


@dataclass(frozen=True)
class InputColumn:
    """One model input: a named column of an MLflow column signature (``type`` is MLflow's
    column type, ``shape`` None), or a tensor of a tensor signature (``type`` is a NumPy
    dtype name, ``shape`` MLflow's, with -1 for any size, the first dimension being rows)."""

    name: str
    type: str
    shape: tuple[int, ...] | None = None

    @property
    def is_tensor(self) -> bool:
        return self.shape is not None

    @property
    def dtype(self):
        if self.shape is not None:
            return _tensor_dtype(self.type)
        return COLUMN_TYPES.get(self.type, (object, "BYTES"))[0]

    @property
    def datatype(self) -> str:
        if self.shape is not None:
            return _datatype_of(self.dtype)
        return COLUMN_TYPES.get(self.type, (object, "BYTES"))[1]

    @property
    def numeric(self) -> bool:
        if self.shape is not None:
            return self.dtype.kind in "iuf"
        return self.type in ("double", "float", "long", "integer")

    def describe(self) -> str:
        """``FP64 [-1, 20]`` for a tensor, ``double`` for a column: what an error says is expected."""
        return f"{self.datatype} {list(self.shape)}" if self.shape is not None else self.type


def _to_column(col: InputColumn, values: Any) -> np.ndarray:
    """Convert one column's values to its signature dtype, strictly enough to be safe."""
    try:
        if col.type in ("long", "integer"):
            f = np.asarray(values, dtype=np.float64)
            if f.ndim != 1 or not np.all(np.isfinite(f)) or not np.all(f == np.floor(f)):
                raise ValueError("not all values are integers")
            return f.astype(col.dtype)
        if col.numeric:
            arr = np.asarray(values, dtype=col.dtype)
        elif col.type == "boolean":
            arr = np.asarray(values)
            if arr.dtype != np.bool_:
                raise ValueError("not all values are booleans")
        else:
            arr = np.empty(len(values), dtype=object)
            arr[:] = list(values)
            if not all(v is None or isinstance(v, str) for v in arr):
                raise ValueError("not all values are strings")
    except (ValueError, TypeError, OverflowError) as e:
        raise InvalidInput(f"input '{col.name}' expects {col.type} values: {e}") from None
    if arr.ndim != 1:
        raise InvalidInput(f"input '{col.name}' must be one value per row")
    return arr


def _datatype_of(dtype: np.dtype) -> str:
    kind = np.dtype(dtype).kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return f"{'U' if kind == 'u' else ''}INT{np.dtype(dtype).itemsize * 8}"
    if kind == "f":
        return f"FP{np.dtype(dtype).itemsize * 8}"
    return "BYTES"


def _tensor_dtype(name: str) -> np.dtype:
    """NumPy dtype of a TensorSpec's dtype name; text ("str", "object", "<U5") is object."""
    try:
        dt = np.dtype(name)
    except TypeError:
        return np.dtype(object)
    return np.dtype(object) if dt.kind in "OUS" else dt
