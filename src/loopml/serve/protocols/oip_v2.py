"""Open Inference Protocol v2 (REST): decode infer requests, encode responses and metadata.

Two ways to send rows are accepted:
- one tensor per input column, named as in the model signature, shape ``[n]`` or ``[n, 1]``;
- one tensor of shape ``[n, k]`` (or ``[k]`` for a single row) holding the ``k`` columns in
  signature order.
A model with a tensor signature takes its tensors by name (an unnamed one is ``input-0``,
and a single-input model takes its one tensor under any name), each of the signature's
shape and datatype; a model without a signature takes the tensors as sent (metadata says
so in ``parameters.signature``). ``data`` may be flat (row-major) or nested. Outputs are ``predict`` (shape ``[n]``) and,
for classifiers, ``predict_proba`` (shape ``[n, classes]``); ``outputs`` in the request
picks among them (default: ``predict`` only, as MLServer's scikit-learn runtime does).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np

from loopml.errors import BadRequest, InvalidInput, PayloadTooLarge
from loopml.serve.runtime import ModelRuntime, Prediction, Rows

NUMERIC = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16", "FP32", "FP64"}
DATATYPES = NUMERIC | {"BOOL", "BYTES"}
OUTPUTS = ("predict", "predict_proba")


@dataclass(slots=True)
class InferRequest:
    rows: Rows
    id: str | None
    outputs: list[str]
    parameters: dict | None
    first_row: dict | None = None


def _flatten(data: list) -> list:
    out: list = []
    stack = [iter(data)]
    while stack:
        for x in stack[-1]:
            if type(x) is list:
                stack.append(iter(x))
                break
            out.append(x)
        else:
            stack.pop()
    return out


def _tensor(t: Any, i: int) -> tuple[str, list[int], str, list]:
    if not isinstance(t, dict):
        raise BadRequest(f"inputs[{i}] must be an object with name, shape, datatype and data")
    name, shape, datatype, data = t.get("name"), t.get("shape"), t.get("datatype"), t.get("data")
    if not isinstance(name, str):
        raise BadRequest(f"inputs[{i}].name must be a string")
    if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape) or not shape:
        raise BadRequest(f"input '{name}': shape must be a non-empty list of non-negative integers")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise BadRequest(f"input '{name}': datatype must be one of {sorted(DATATYPES)}. Got {datatype!r} instead.")
    if not isinstance(data, list):
        data = [data] if data is not None and not isinstance(data, dict) else None
        if data is None:
            raise BadRequest(f"input '{name}': data must be a list")
    if any(type(x) is list for x in data):
        data = _flatten(data)
    if len(data) != prod(shape):
        raise BadRequest(f"input '{name}': shape {shape} needs {prod(shape)} values, data has {len(data)}")
    if datatype in NUMERIC:
        _check_numbers(name, datatype, data)
    return name, shape, datatype, data


# the values an integer datatype can hold; JSON numbers past them are the client's mistake (400)
INT_RANGE = {t: ((-(1 << (b - 1)), (1 << (b - 1)) - 1) if t[0] == "I" else (0, (1 << b) - 1))
             for t, b in (("INT8", 8), ("INT16", 16), ("INT32", 32), ("INT64", 64),
                          ("UINT8", 8), ("UINT16", 16), ("UINT32", 32), ("UINT64", 64))}


def _check_numbers(name: str, datatype: str, data: list) -> None:
    """A numeric tensor holds numbers: no booleans (JSON true is not 1.0 here), and integers
    within the datatype's range. Other values (strings, nulls) are the signature's business."""
    if any(type(x) is bool for x in data):
        raise BadRequest(f"input '{name}': {datatype} data holds a boolean; send numbers, or datatype BOOL")
    bounds = INT_RANGE.get(datatype)
    if bounds is not None:
        # a JSON integer past 64 bits reaches us as a float (orjson), so an integer tensor
        # refuses floats outright rather than round them into range
        if any(type(x) is float for x in data):
            bad = next(x for x in data if type(x) is float)
            raise BadRequest(f"input '{name}': {datatype} data holds {bad!r}; send integers, or datatype FP64")
        ints = [x for x in data if type(x) is int]
        if ints and (min(ints) < bounds[0] or max(ints) > bounds[1]):
            bad = next(x for x in ints if not bounds[0] <= x <= bounds[1])
            raise BadRequest(f"input '{name}': {bad} is outside the range of {datatype} "
                             f"({bounds[0]} to {bounds[1]})")


def _check_datatype(runtime: ModelRuntime, column: str, datatype: str) -> None:
    col = next((c for c in runtime.inputs if c.name == column), None)
    if col is None:
        return
    ok = (datatype in NUMERIC or datatype == "BOOL") if col.numeric else (
        datatype == "BOOL" if col.type == "boolean" else datatype == "BYTES")
    if not ok:
        raise InvalidInput(f"input '{column}' is {datatype} but the model expects {col.datatype}")


def decode_infer(payload: Any, runtime: ModelRuntime, max_rows: int, key_column: str | None = None) -> InferRequest:
    """Turn an OIP infer request (already parsed JSON) into rows in signature order.

    ``key_column`` names the input a sticky traffic policy reads; a tensor of that name
    is accepted even when it is not a model input, and its first value is returned.
    """
    if not isinstance(payload, dict):
        raise BadRequest("infer request must be a JSON object with an 'inputs' list")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("infer request needs a non-empty 'inputs' list")
    rid = payload.get("id")
    if rid is not None and not isinstance(rid, str):
        raise BadRequest("'id' must be a string")
    params = payload.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise BadRequest("'parameters' must be an object")
    outputs = _requested_outputs(payload.get("outputs"), runtime)
    tensors = [_tensor(t, i) for i, t in enumerate(inputs)]
    names = runtime.column_names
    known = set(names)
    first_row = None
    if key_column is not None:
        for t in tensors:
            if t[0] == key_column:
                first_row = {key_column: t[3][0] if t[3] else None}
        if key_column not in known:
            tensors = [t for t in tensors if t[0] != key_column] or tensors
    columns: dict[str, Any] = {}
    if runtime.layout != "columns":
        rows = _tensor_rows(tensors, runtime, params)
        if rows.n > max_rows:
            raise PayloadTooLarge("number of rows", max_rows)
        if rows.n == 0:
            raise InvalidInput("the request has no rows")
        return InferRequest(rows, rid, outputs, params, first_row)
    if all(t[0] in known for t in tensors):
        n = None
        for name, shape, datatype, data in tensors:
            if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
                raise BadRequest(f"input '{name}': a column tensor has shape [n] or [n, 1], got {shape}")
            _check_datatype(runtime, name, datatype)
            if n is None:
                n = shape[0]
            elif shape[0] != n:
                raise BadRequest(f"input '{name}' has {shape[0]} rows, other inputs have {n}")
            columns[name] = data
        missing = [c for c in names if c not in columns]
        if missing:
            raise InvalidInput(f"missing input(s) {missing}; the model expects {names}")
    elif len(tensors) == 1:
        name, shape, datatype, data = tensors[0]
        k = len(names)
        if len(shape) == 2 and shape[1] == k:
            n = shape[0]
        elif len(shape) == 1 and shape[0] == k and k > 1:
            n = 1
        else:
            raise InvalidInput(f"input '{name}' with shape {shape} does not match the model's {k} inputs "
                               f"{names}; send one tensor per input or one tensor of shape [n, {k}]")
        for j, c in enumerate(names):
            _check_datatype(runtime, c, datatype)
            columns[c] = data[j::k]
    else:
        unknown = [t[0] for t in tensors if t[0] not in known]
        raise InvalidInput(f"unknown input(s) {unknown}; the model expects {names}")
    if n > max_rows:
        raise PayloadTooLarge("number of rows", max_rows)
    if n == 0:
        raise InvalidInput("the request has no rows")
    return InferRequest(Rows(columns, n), rid, outputs, params, first_row)


NUMPY_TYPES = {"BOOL": "bool", "FP16": "float16", "FP32": "float32", "FP64": "float64", "BYTES": "object",
               **{t: t.lower() for t in INT_RANGE}}


def _tensor_rows(tensors: list, runtime: ModelRuntime, params: dict | None) -> Rows:
    """Rows of a tensor-signature model (each request tensor is one of its inputs), or of a
    model without a signature (the tensors as sent; with ``parameters.content_type`` "pd",
    MLServer's pandas convention, each tensor is a column of one DataFrame)."""
    specs = {c.name: c for c in runtime.inputs}
    as_frame = runtime.layout == "none" and (params or {}).get("content_type") == "pd"
    columns: dict[str, Any] = {}
    n = None
    for name, shape, datatype, data in tensors:
        spec = specs.get(name)
        if runtime.layout == "tensors":
            if spec is None and len(tensors) == 1 and len(specs) == 1 and not runtime.named_tensors:
                spec = next(iter(specs.values()))  # the one unnamed input, whatever the client called it
            if spec is None:
                raise InvalidInput(f"model '{runtime.name}' has no input '{name}'; it expects "
                                   f"{', '.join(f'{c.name} ({c.describe()})' for c in runtime.inputs)}")
            _check_tensor_datatype(runtime, spec, datatype)
            name = spec.name
        arr = _array(name, shape, datatype, data)
        columns[name] = arr.reshape(len(arr), -1)[:, 0] if as_frame and arr.ndim == 2 and arr.shape[1] == 1 else arr
        if n is None:
            n = shape[0]
        elif shape[0] != n:
            raise BadRequest(f"input '{name}' has {shape[0]} rows, other inputs have {n}")
    missing = [c.name for c in runtime.inputs if c.name not in columns]
    if missing:
        expected = ", ".join(f"{c.name} ({c.describe()})" for c in runtime.inputs)
        raise InvalidInput(f"model '{runtime.name}' is missing input(s) {missing}; it expects {expected}")
    return Rows(columns, n or 0, layout="frame" if as_frame else "tensors")


def _check_tensor_datatype(runtime: ModelRuntime, spec, datatype: str) -> None:
    kind = spec.dtype.kind
    ok = datatype == "BYTES" if kind == "O" else datatype == "BOOL" if kind == "b" else datatype in NUMERIC
    if not ok:
        raise InvalidInput(f"model '{runtime.name}' input '{spec.name}' expects {spec.describe()}; got {datatype}")


def _array(name: str, shape: list[int], datatype: str, data: list):
    """The request tensor as a NumPy array of its own shape and datatype."""
    if datatype == "BYTES":
        if not all(v is None or isinstance(v, str) for v in data):
            raise BadRequest(f"input '{name}': BYTES data must be strings")
        arr = np.empty(len(data), dtype=object)
        arr[:] = data
        return arr.reshape(shape)
    if datatype == "BOOL" and not all(type(v) is bool for v in data):
        raise BadRequest(f"input '{name}': BOOL data must be true or false")
    try:
        return np.asarray(data, dtype=NUMPY_TYPES[datatype]).reshape(shape)
    except (ValueError, TypeError) as e:
        raise BadRequest(f"input '{name}': {datatype} data must be numbers: {e}") from None


def _requested_outputs(req: Any, runtime: ModelRuntime) -> list[str]:
    if req is None:
        return ["predict"]
    if not isinstance(req, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in req):
        raise BadRequest("'outputs' must be a list of objects with a 'name'")
    allowed = output_names(runtime)
    names = [o["name"] for o in req]
    bad = [n for n in names if n not in allowed]
    if bad:
        raise InvalidInput(f"unknown output(s) {bad}; this model has {allowed}")
    return names or ["predict"]


def output_names(runtime: ModelRuntime) -> list[str]:
    return list(OUTPUTS) if runtime.is_classifier else ["predict"]


def encode_infer(req: InferRequest, pred: Prediction, runtime: ModelRuntime, rid: str) -> dict:
    n = req.rows.n
    out = []
    for name in req.outputs:
        if name == "predict":
            shape = [n, *pred.predict.shape[1:]]  # a model may answer a vector per row (embeddings)
            out.append({"name": "predict", "shape": shape, "datatype": runtime.predict_datatype(),
                        "data": pred.predict if len(shape) == 1 else pred.predict.ravel()})
        elif name == "predict_proba" and pred.proba is not None:
            out.append({"name": "predict_proba", "shape": list(pred.proba.shape), "datatype": "FP64",
                        "data": pred.proba.ravel()})
    body = {"model_name": runtime.name, "model_version": runtime.version, "id": rid, "outputs": out}
    if req.parameters:
        body["parameters"] = req.parameters
    return body


def model_metadata(runtime: ModelRuntime, versions: list[str]) -> dict:
    outputs = [{"name": "predict", "datatype": runtime.predict_datatype(), "shape": list(runtime.predict_shape)}]
    if runtime.is_classifier:
        outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(runtime.classes)]})
    parameters: dict[str, Any] = {"version": runtime.version}
    if not runtime.has_signature:
        # OIP metadata has no way to say "anything": inputs stay empty and this says why
        parameters["signature"] = "none"
        parameters["inputs_note"] = "the model has no signature: each request's tensors are passed to it as sent"
    return {
        "name": runtime.name,
        "versions": versions,
        "platform": runtime.runtime_name or "sklearn",
        "inputs": [{"name": c.name, "datatype": c.datatype, "shape": list(c.shape) if c.is_tensor else [-1]}
                   for c in runtime.inputs],
        "outputs": outputs,
        "parameters": parameters,
    }


def server_metadata(version: str) -> dict:
    return {"name": "loopml", "version": version, "extensions": []}
