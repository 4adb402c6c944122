"""MLflow scoring protocol (``POST /invocations``), answered like ``mlflow models serve``.

JSON bodies hold exactly one of ``dataframe_split``, ``dataframe_records``, ``instances``
or ``inputs`` (plus optional ``params``); ``text/csv`` bodies are a header row and rows.
The answer is ``{"predictions": [...]}``. Tensor-signature models and models without a
signature read these shapes as MLflow's scoring server does (see the section below).
"""

from __future__ import annotations

import csv
import io
from typing import Any

from loopml.errors import BadRequest, InvalidInput, PayloadTooLarge, UnsupportedMediaType
from loopml.serve.http import loads
from loopml.serve.runtime import ModelRuntime, Prediction, Rows

KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
EXPECTED = "application/json or text/csv"


def decode(body: bytes, content_type: str, runtime: ModelRuntime, max_rows: int,
           key_column: str | None = None) -> tuple[Rows, dict | None]:
    """Rows in signature order (extra columns ignored), and ``{key_column: value}`` of the
    first row when a sticky traffic policy asks for a column (which need not be a feature)."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    first = None
    if ctype == "text/csv":
        rows = _from_csv(body, runtime)
    elif ctype in ("application/json", "") or ctype.endswith("+json"):
        payload = loads(body)
        rows = _from_json(payload, runtime)
        if key_column is not None:
            first = {key_column: _first_value(payload, key_column)}
    else:
        raise UnsupportedMediaType(content_type, EXPECTED)
    if rows.n > max_rows:
        raise PayloadTooLarge("number of rows", max_rows)
    if rows.n == 0:
        raise InvalidInput("the request has no rows")
    return rows, first


def _first_value(payload: dict, key: str) -> Any:
    """The first row's value of ``key`` in any accepted JSON layout (payload already valid)."""
    value = next(payload[k] for k in KEYS if k in payload)
    if isinstance(value, dict) and "data" in value and "columns" in value:  # dataframe_split
        cols, data = value["columns"], value["data"]
        return data[0][cols.index(key)] if key in cols and data else None
    if isinstance(value, dict):  # columns
        col = value.get(key)
        return col[0] if isinstance(col, list) and col else col
    if value and isinstance(value[0], dict):
        return value[0].get(key)
    return None


def _from_json(payload: Any, runtime: ModelRuntime) -> Rows:
    if not isinstance(payload, dict):
        raise BadRequest(f"body must be a JSON object with one of {list(KEYS)}")
    found = [k for k in KEYS if k in payload]
    extra = set(payload) - set(KEYS) - {"params"}
    if len(found) != 1 or extra:
        raise BadRequest(f"body must hold exactly one of {list(KEYS)} (and optionally 'params'); got {sorted(payload)}")
    if "params" in payload and not isinstance(payload["params"], (dict, type(None))):
        raise BadRequest("'params' must be an object")
    key = found[0]
    value = payload[key]
    if runtime.layout != "columns":
        return _tensor_json(key, value, runtime)
    if key == "dataframe_split":
        if not isinstance(value, dict) or not isinstance(value.get("data"), list):
            raise BadRequest("dataframe_split must be an object with 'columns' and 'data' (a list of rows)")
        return _from_lists(value["data"], value.get("columns"), runtime)
    if key == "dataframe_records":
        if not isinstance(value, list):
            raise BadRequest("dataframe_records must be a list of objects")
        return _from_records(value, runtime)
    # instances / inputs: records, rows of values, or columns
    if isinstance(value, dict):
        return _from_columns(value, runtime)
    if not isinstance(value, list):
        raise BadRequest(f"'{key}' must be a list of records or rows, or an object of columns")
    if value and all(isinstance(r, dict) for r in value):
        return _from_records(value, runtime)
    return _from_lists(value, None, runtime)


def _from_lists(data: list, columns: Any, runtime: ModelRuntime) -> Rows:
    names = runtime.column_names
    if columns is None:
        columns = names
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise BadRequest("'columns' must be a list of column names")
    k = len(columns)
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != k:
            raise BadRequest(f"row {i} must be a list of {k} values (one per column {columns})")
    index = {c: j for j, c in enumerate(columns)}
    missing = [c for c in names if c not in index]
    if missing:
        raise InvalidInput(f"missing column(s) {missing}; the model expects {names}")
    if len(data) == 1:
        row = data[0]
        return Rows({c: [row[index[c]]] for c in names}, 1)
    return Rows({c: [row[index[c]] for row in data] for c in names}, len(data))


def _from_records(records: list, runtime: ModelRuntime) -> Rows:
    names = runtime.column_names
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise BadRequest(f"record {i} must be an object of column -> value")
    try:
        return Rows({c: [r[c] for r in records] for c in names}, len(records))
    except KeyError as e:
        raise InvalidInput(f"missing column {e.args[0]!r} in a record; the model expects {names}") from None


def _from_columns(cols: dict, runtime: ModelRuntime) -> Rows:
    names = runtime.column_names
    missing = [c for c in names if c not in cols]
    if missing:
        raise InvalidInput(f"missing column(s) {missing}; the model expects {names}")
    out = {c: (cols[c] if isinstance(cols[c], list) else [cols[c]]) for c in names}
    lengths = {len(v) for v in out.values()}
    if len(lengths) > 1:
        raise BadRequest("all columns must have the same number of values")
    return Rows(out, lengths.pop() if lengths else 0)


def _from_csv(body: bytes, runtime: ModelRuntime) -> Rows:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("CSV body is not UTF-8") from None
    try:
        reader = list(csv.reader(io.StringIO(text)))
    except csv.Error as e:
        raise BadRequest(f"malformed CSV: {e}") from None
    if not reader:
        raise BadRequest("CSV body is empty; send a header row and data rows")
    header, data = reader[0], [r for r in reader[1:] if r]
    if runtime.layout != "columns":
        bad = next((i for i, r in enumerate(data) if len(r) != len(header)), None)
        if bad is not None:
            raise BadRequest(f"CSV row {bad + 1} has {len(data[bad])} values; the header has {len(header)}")
        return _table_rows(header, _csv_typed(header, data, runtime), runtime)
    rows = _from_lists(data, header, runtime)
    for col in runtime.inputs:
        values = rows.columns[col.name]
        if col.type == "boolean":
            rows.columns[col.name] = [_csv_bool(v, col.name) for v in values]
        elif col.numeric:
            rows.columns[col.name] = [_csv_number(v, col.name) for v in values]
    return rows


def _csv_number(v: str, name: str) -> float:
    try:
        return float(v) if v != "" else float("nan")
    except ValueError:
        raise InvalidInput(f"column '{name}' expects numbers, got {v!r}") from None


def _csv_bool(v: str, name: str) -> bool:
    low = v.strip().lower()
    if low in ("true", "1"):
        return True
    if low in ("false", "0"):
        return False
    raise InvalidInput(f"column '{name}' expects booleans, got {v!r}")


# -- tensor signatures and models without one ------------------------------------------------
# As MLflow's scoring server does: ``inputs``/``instances`` hold the tensor (a list of rows)
# or a dict of named tensors (or records, for named tensors); the table layouts hold, for one
# unnamed [-1, k] tensor, k columns of any names, else one column per tensor whose cells are
# a row's (flattened) values. A model without a signature gets the body as sent: a table
# layout as one DataFrame, ``inputs``/``instances`` as an array (or a dict of arrays).


def _tensor_json(key: str, value: Any, runtime: ModelRuntime) -> Rows:
    if key in ("dataframe_split", "dataframe_records"):
        if key == "dataframe_split":
            if not isinstance(value, dict) or not isinstance(value.get("data"), list):
                raise BadRequest("dataframe_split must be an object with 'columns' and 'data' (a list of rows)")
            data = value["data"]
            columns = value.get("columns") or [str(j) for j in range(len(data[0]) if data and isinstance(data[0], list) else 0)]
        else:
            if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
                raise BadRequest("dataframe_records must be a list of objects")
            columns = list(value[0]) if value else []
            data = [[r.get(c) for c in columns] for r in value]
        if not isinstance(columns, list) or not all(isinstance(c, (str, int)) for c in columns):
            raise BadRequest("'columns' must be a list of column names")
        columns = [str(c) for c in columns]  # a DataFrame without names sends 0, 1, ...
        for i, row in enumerate(data):
            if not isinstance(row, list) or len(row) != len(columns):
                raise BadRequest(f"row {i} must be a list of {len(columns)} values (one per column {columns})")
        return _table_rows(columns, data, runtime)
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        if runtime.layout == "none":
            columns = list(value[0])
            return _table_rows(columns, [[r.get(c) for c in columns] for r in value], runtime)
        value = {c.name: [r.get(c.name) for r in value] for c in runtime.inputs}
    if isinstance(value, dict):
        specs = {c.name for c in runtime.inputs}
        if runtime.layout == "tensors" and len(value) == 1 and len(specs) == 1 and not runtime.named_tensors:
            value = {next(iter(specs)): next(iter(value.values()))}
        unknown = [k for k in value if runtime.layout == "tensors" and k not in specs]
        if unknown:
            raise InvalidInput(f"model '{runtime.name}' has no input(s) {unknown}; it expects {_expected(runtime)}")
        arrays = {k: _array(runtime, k, v) for k, v in value.items()}
    elif isinstance(value, list):
        if runtime.layout == "tensors" and len(runtime.inputs) > 1:
            raise InvalidInput(f"model '{runtime.name}' takes named tensors {_expected(runtime)}; send "
                               f"'{key}' as an object of name -> values")
        name = runtime.inputs[0].name if runtime.inputs else "input-0"
        arrays = {name: _array(runtime, name, value)}
    else:
        raise BadRequest(f"'{key}' must be a list (a tensor) or an object of name -> tensor")
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) > 1:
        raise BadRequest(f"all tensors must have the same number of rows; got {sorted(lengths)}")
    return Rows(arrays, lengths.pop() if lengths else 0, layout="tensors")


def _array(runtime: ModelRuntime, name: str, values: Any):
    import numpy as np

    try:
        arr = np.asarray(values if isinstance(values, list) else [values])
    except ValueError as e:  # ragged nesting
        raise InvalidInput(f"model '{runtime.name}' input '{name}': {e}") from None
    if arr.ndim == 0:
        raise BadRequest(f"input '{name}' must be a list with one entry per row")
    return arr.astype(object) if arr.dtype.kind in "US" else arr


def _table_rows(columns: list[str], data: list[list], runtime: ModelRuntime) -> Rows:
    """Rows of a table body (dataframe_split/records, CSV) for a tensor or signature-less model."""
    n = len(data)
    if runtime.layout == "none":
        return Rows({c: [row[j] for row in data] for j, c in enumerate(columns)}, n, layout="frame")
    specs = runtime.inputs
    if len(specs) == 1 and not runtime.named_tensors and len(columns) > 1:
        spec = specs[0]
        if tuple(spec.shape) not in ((-1, len(columns)), (n, len(columns))):
            raise InvalidInput(f"model '{runtime.name}' input '{spec.name}' expects {spec.describe()}; a table of "
                               f"{len(columns)} columns gives shape [{n}, {len(columns)}]")
        return Rows({spec.name: _array(runtime, spec.name, data)}, n, layout="tensors")
    index = {c: j for j, c in enumerate(columns)}
    if len(specs) == 1 and not runtime.named_tensors and len(columns) == 1:
        index = {specs[0].name: 0}
    missing = [c.name for c in specs if c.name not in index]
    if missing:
        raise InvalidInput(f"model '{runtime.name}' is missing input(s) {missing}; it expects {_expected(runtime)}")
    out = {}
    for spec in specs:
        cells = [row[index[spec.name]] for row in data]
        rest = [d for d in spec.shape[1:]]
        if rest and cells and isinstance(cells[0], list):  # a row's tensor, flattened (as MLflow writes it)
            import numpy as np

            try:
                cells = [np.asarray(c).reshape(rest) for c in cells]
            except ValueError as e:
                raise InvalidInput(f"model '{runtime.name}' input '{spec.name}' expects {spec.describe()}: {e}") from None
        out[spec.name] = cells
    return Rows(out, n, layout="tensors")


def _csv_typed(header: list[str], data: list[list[str]], runtime: ModelRuntime) -> list[list]:
    """CSV cells as numbers where the input is numeric (the spec's, or, without a signature, a
    column whose every cell reads as one, as pandas.read_csv would) and as text elsewhere."""
    numeric = [True] * len(header)
    if runtime.layout == "tensors":
        numeric = [runtime.inputs[0].numeric] * len(header) if len(runtime.inputs) == 1 else \
            [next((s.numeric for s in runtime.inputs if s.name == c), False) for c in header]
    for j in range(len(header)):
        if numeric[j]:
            try:
                vals = [float(r[j]) if r[j] != "" else float("nan") for r in data]
            except (ValueError, IndexError):
                if runtime.layout == "none":
                    continue
                raise InvalidInput(f"model '{runtime.name}' column '{header[j]}' expects numbers") from None
            for r, v in zip(data, vals):
                r[j] = v
    return data


def _expected(runtime: ModelRuntime) -> str:
    return ", ".join(f"{c.name} ({c.describe()})" for c in runtime.inputs)


def encode(pred: Prediction) -> dict:
    return {"predictions": pred.predict}
