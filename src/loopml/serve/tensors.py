"""Tensor inputs: tensor signatures, their typing and checks, and models without a signature.

A tensor signature (MLflow ``TensorSpec``, e.g. ``float32 [-1, 20]`` or images
``[-1, 3, 32, 32]``) gives one or several inputs, each an (n, ...) array; unnamed tensors are
called ``input-0``, ``input-1``, ... as MLServer's MLflow runtime does. A model without a
signature takes each request's input as sent. :class:`~loopml.serve.runtime.ModelRuntime`
calls these for every layout other than named columns; nothing here knows a wire format.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loopml.errors import InvalidInput
from loopml.serve.runtimes.columns import InputColumn, Rows, _datatype_of


def read_tensor_signature(specs: list[dict]) -> tuple[list[InputColumn], bool] | None:
    """(inputs, named) for a signature whose inputs are all tensors; None for a column signature."""
    if not specs or not all(c.get("type") == "tensor" for c in specs):
        return None
    inputs = [InputColumn(c.get("name") or f"input-{i}", str(c["tensor-spec"]["dtype"]),
                          tuple(int(d) for d in c["tensor-spec"]["shape"])) for i, c in enumerate(specs)]
    return inputs, any(c.get("name") for c in specs)


def tensor_smoke_rows(layout: str, inputs: list[InputColumn], model: Any, example: Any) -> tuple[Rows, str]:
    """The smoke-check rows of a tensor (or signature-less) model and where they come from: its
    input example, else one row built from the tensor specs, else (no signature) a row of zeros
    as wide as the model's ``n_features_in_``."""
    import pandas as pd

    if isinstance(example, np.ndarray) and example.ndim and len(example):
        name = inputs[0].name if inputs else "input-0"
        return Rows({name: example}, len(example), layout="tensors"), "its input example"
    if isinstance(example, dict) and example:
        arrays = {k: np.asarray(v) for k, v in example.items()}
        n = len(next(iter(arrays.values())))
        return Rows(arrays, n, layout="tensors"), "its input example"
    if isinstance(example, list) and example and layout == "none":  # MLflow keeps a list example as a list (texts)
        arr = np.asarray(example)
        return Rows({"input-0": arr.astype(object) if arr.dtype.kind in "US" else arr}, len(arr), layout="tensors"), \
            "its input example"
    if isinstance(example, pd.DataFrame) and len(example) and layout == "none":
        return Rows({str(c): example[c].tolist() for c in example.columns}, len(example), layout="frame"), \
            "its input example"
    if layout == "tensors":
        cols = {}
        for c in inputs:
            shape = (1, *(1 if d == -1 else d for d in c.shape[1:]))
            cols[c.name] = np.full(shape, "", dtype=object) if c.dtype.kind == "O" else np.zeros(shape, c.dtype)
        return Rows(cols, 1), "a row built from its signature"
    width = getattr(model, "n_features_in_", None)
    if width is None:
        raise ValueError("it has no signature and no input example; log it with input_example=... "
                         "(or a signature) so it can be checked before it serves")
    return Rows({"input-0": np.zeros((1, int(width)))}, 1, layout="tensors"), \
        f"a row of {width} zeros (it has no signature; its n_features_in_)"


def typed_tensors(model: str, inputs: list[InputColumn], rows: Rows) -> dict[str, np.ndarray]:
    """Typed (n, ...) arrays of a batch for a tensor signature (raises InvalidInput)."""
    out = {}
    for spec in inputs:
        values = rows.columns.get(spec.name)
        if values is None:
            raise InvalidInput(f"model '{model}' is missing input '{spec.name}' ({spec.describe()}); "
                               f"it expects {[c.name for c in inputs]}")
        out[spec.name] = _to_tensor(model, spec, values, rows.n)
    return out


def given_input(rows: Rows) -> tuple[Any, Any]:
    """(model input, logged input) of a model without a signature: the body as sent, a
    DataFrame for a table layout, else one array (or a dict of named arrays)."""
    if rows.layout == "frame":
        import pandas as pd

        return pd.DataFrame(dict(rows.columns)), rows.columns
    arrays = {k: _as_given(v) for k, v in rows.columns.items()}
    return (next(iter(arrays.values())) if len(arrays) == 1 else arrays), arrays


def _stack(values: Any) -> np.ndarray:
    """(n, ...) array of a tensor input's values (an array, or a list of per-row values)."""
    if isinstance(values, np.ndarray):
        return values
    if values and isinstance(values[0], np.ndarray):
        return np.stack(values)
    return np.asarray(values)


def _to_tensor(model: str, spec: InputColumn, values: Any, n: int) -> np.ndarray:
    """One tensor input as an (n, ...) array of the spec's dtype, its shape checked against the
    spec's (-1 matches any size). Raises InvalidInput naming the model, input and expectation."""
    want = spec.describe()
    try:
        arr = _stack(values)
    except ValueError as e:  # ragged rows
        raise InvalidInput(f"model '{model}' input '{spec.name}' expects {want}: {e}") from None
    shape = spec.shape
    if arr.ndim != len(shape) or arr.shape[0] != n or any(d not in (-1, g) for d, g in zip(shape[1:], arr.shape[1:])):
        raise InvalidInput(f"model '{model}' input '{spec.name}' expects shape {list(shape)} ({want}); "
                           f"got shape {list(arr.shape)}")
    dt = spec.dtype
    if dt.kind == "O":
        if arr.dtype.kind in "US":
            arr = arr.astype(object)
        if arr.dtype.kind != "O" or not all(v is None or isinstance(v, (str, bytes)) for v in arr.ravel()):
            raise InvalidInput(f"model '{model}' input '{spec.name}' expects text ({want}); got {_datatype_of(arr.dtype)}")
        return arr
    if dt.kind == "b":
        if arr.dtype.kind != "b":
            raise InvalidInput(f"model '{model}' input '{spec.name}' expects {want}; got {_datatype_of(arr.dtype)}")
        return arr
    if arr.dtype.kind not in "iufb" or arr.dtype.kind == "b":
        raise InvalidInput(f"model '{model}' input '{spec.name}' expects numbers ({want}); "
                           f"got {_datatype_of(arr.dtype)}")
    if dt.kind in "iu" and arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.floor(arr)):
            raise InvalidInput(f"model '{model}' input '{spec.name}' expects integers ({want}); got fractions")
    return arr if arr.dtype == dt else arr.astype(dt)


def _as_given(values: Any) -> np.ndarray:
    """A tensor of a model without a signature: the array as sent."""
    return _stack(values)
