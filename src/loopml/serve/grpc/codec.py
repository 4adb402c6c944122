"""gRPC messages <-> the OIP v2 dicts that :mod:`loopml.serve.protocols.oip_v2` reads and writes.

A ``ModelInferRequest`` becomes the same dict a REST body parses to, so both transports
decode, validate and answer through one path (:meth:`ServeApp.oip_infer`). Tensor data comes
as typed ``contents`` (``fp64_contents``, ``bytes_contents``, ...) or as
``raw_input_contents``: row-major little-endian bytes, BYTES elements each prefixed by a
4-byte little-endian length (what ``tritonclient`` sends). The response is raw when the
request was raw (``tritonclient`` reads only raw numeric outputs), else typed contents.
"""

from __future__ import annotations

import struct
from math import prod
from typing import Any

import numpy as np

from loopml.errors import BadRequest

# OIP datatype -> NumPy dtype (explicitly little-endian: the wire order) and typed-contents field
DTYPES = {
    "BOOL": np.dtype("?"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
CONTENTS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def request_payload(request: Any) -> dict:
    """The OIP dict of a ``ModelInferRequest`` (``inputs``, ``id``, ``outputs``, ``parameters``)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
                         "send one per input, or typed contents for all of them")
    inputs = []
    for i, t in enumerate(request.inputs):
        shape = list(t.shape)
        if raw:
            if t.HasField("contents"):
                raise BadRequest(f"input '{t.name}': contents and raw_input_contents both given; send one")
            data = _from_raw(t.name, t.datatype, shape, raw[i])
        else:
            data = _from_contents(t.name, t.datatype, t.contents)
        inputs.append({"name": t.name, "shape": shape, "datatype": t.datatype, "data": data})
    payload: dict[str, Any] = {"inputs": inputs}
    if request.id:
        payload["id"] = request.id
    if request.outputs:
        payload["outputs"] = [{"name": o.name} for o in request.outputs]
    if request.parameters:
        payload["parameters"] = {k: _param_value(v) for k, v in request.parameters.items()}
    return payload


def _from_raw(name: str, datatype: str, shape: list[int], buf: bytes) -> list:
    if datatype == "BYTES":
        return [_text(name, b) for b in _split_bytes(name, buf)]
    dtype = DTYPES.get(datatype)
    if dtype is None:
        return []  # oip_v2 names the unknown datatype
    if len(buf) % dtype.itemsize:
        raise BadRequest(f"input '{name}': {len(buf)} raw bytes are not a whole number of {datatype} values "
                         f"({dtype.itemsize} bytes each)")
    n = len(buf) // dtype.itemsize
    if shape and all(s >= 0 for s in shape) and n != prod(shape):
        raise BadRequest(f"input '{name}': shape {shape} needs {prod(shape)} values, raw data has {n}")
    return np.frombuffer(buf, dtype=dtype).tolist()


def _split_bytes(name: str, buf: bytes) -> list[bytes]:
    out, i, end = [], 0, len(buf)
    while i < end:
        if end - i < 4:
            raise BadRequest(f"input '{name}': BYTES raw data ends inside a 4-byte length prefix")
        (size,) = struct.unpack_from("<I", buf, i)
        i += 4
        if i + size > end:
            raise BadRequest(f"input '{name}': a BYTES element of {size} bytes runs past the raw data")
        out.append(buf[i:i + size])
        i += size
    return out


def _text(name: str, b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"input '{name}': BYTES elements must be UTF-8 text") from None


def _from_contents(name: str, datatype: str, contents: Any) -> list:
    field = CONTENTS.get(datatype)
    if field is None:
        if datatype == "FP16":
            raise BadRequest(f"input '{name}': FP16 has no typed contents; send it as raw_input_contents")
        return []
    values = getattr(contents, field)
    return [_text(name, b) for b in values] if datatype == "BYTES" else list(values)


def _param_value(p: Any) -> Any:
    kind = p.WhichOneof("parameter_choice")
    return getattr(p, kind) if kind else None


def infer_response(pb2: Any, body: dict, raw: bool) -> Any:
    """The ``ModelInferResponse`` for an OIP response dict (``oip_v2.encode_infer``)."""
    outputs = body.get("outputs", [])
    raw = raw or any(o["datatype"] not in CONTENTS for o in outputs)  # FP16: raw only, and raw is all or none
    resp = pb2.ModelInferResponse(model_name=str(body.get("model_name", "")),
                                  model_version=str(body.get("model_version", "")), id=str(body.get("id", "")))
    for o in outputs:
        datatype = o["datatype"]
        tensor = resp.outputs.add(name=o["name"], datatype=datatype, shape=[int(s) for s in o["shape"]])
        data = o["data"]
        if raw:
            resp.raw_output_contents.append(_to_raw(datatype, data))
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(_as_bytes(x) for x in _flat(data))
        else:
            getattr(tensor.contents, CONTENTS[datatype]).extend(
                np.asarray(data, dtype=DTYPES[datatype]).ravel().tolist())
    for k, v in (body.get("parameters") or {}).items():
        _set_param(resp.parameters[k], v)
    return resp


def _to_raw(datatype: str, data: Any) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in map(_as_bytes, _flat(data)))
    return np.ascontiguousarray(data, dtype=DTYPES[datatype]).tobytes()


def _flat(data: Any) -> list:
    return np.asarray(data, dtype=object).ravel().tolist()


def _as_bytes(x: Any) -> bytes:
    return x if isinstance(x, bytes) else str(x).encode("utf-8")


def _set_param(p: Any, v: Any) -> None:
    if isinstance(v, bool):
        p.bool_param = v
    elif isinstance(v, int):
        p.int64_param = v
    elif isinstance(v, float):
        p.double_param = v
    else:
        p.string_param = str(v)


def metadata_response(pb2: Any, meta: dict) -> Any:
    """The ``ModelMetadataResponse`` for an OIP model metadata dict (``oip_v2.model_metadata``);
    its free-form ``parameters`` go into the proto's string ``properties``."""
    resp = pb2.ModelMetadataResponse(name=meta.get("name", ""), versions=[str(v) for v in meta.get("versions", [])],
                                     platform=meta.get("platform", ""))
    for key in ("inputs", "outputs"):
        for t in meta.get(key) or []:
            getattr(resp, key).add(name=t["name"], datatype=t["datatype"], shape=[int(s) for s in t.get("shape", [])])
    for k, v in (meta.get("parameters") or {}).items():
        resp.properties[k] = str(v)
    return resp
