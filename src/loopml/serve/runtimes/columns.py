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
    """``n`` input rows, as column name -> list (or array) of values, plus per-row ids."""

    columns: dict[str, Any]
    n: int
    ids: list[str | None] | None = None


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
    name: str
    type: str

    @property
    def dtype(self):
        return COLUMN_TYPES.get(self.type, (object, "BYTES"))[0]

    @property
    def datatype(self) -> str:
        return COLUMN_TYPES.get(self.type, (object, "BYTES"))[1]

    @property
    def numeric(self) -> bool:
        return self.type in ("double", "float", "long", "integer")


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
