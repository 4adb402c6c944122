"""MLflow scoring protocol (``POST /invocations``), answered like ``mlflow models serve``.

JSON bodies hold exactly one of ``dataframe_split``, ``dataframe_records``, ``instances``
or ``inputs`` (plus optional ``params``); ``text/csv`` bodies are a header row and rows.
The answer is ``{"predictions": [...]}``.
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


def encode(pred: Prediction) -> dict:
    return {"predictions": pred.predict}
