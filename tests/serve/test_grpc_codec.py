"""The gRPC codec's raw tensor decoding: every datatype decodes to what NumPy's little-endian
decoding gives (values and Python types), NaN and infinities survive, and the size checks
refuse raw data that does not fit the shape."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loopml.errors import BadRequest
from loopml.serve.grpc import codec, messages

VALUES = {
    "BOOL": [True, False, True],
    "INT8": [-128, 0, 127], "INT16": [-32768, 1, 32767], "INT32": [-(2**31), 7, 2**31 - 1],
    "INT64": [-(2**63), 42, 2**63 - 1], "UINT8": [0, 1, 255], "UINT16": [0, 2, 65535],
    "UINT32": [0, 3, 2**32 - 1], "UINT64": [0, 4, 2**64 - 1],
    "FP16": [0.5, -2.0, 65504.0], "FP32": [1.5, -0.0, 3.4e38], "FP64": [1e-300, -1e300, math.inf],
}


def _request(datatype: str, values: list, shape: list[int]):
    pb2, _ = messages.load()
    req = pb2.ModelInferRequest(model_name="m")
    req.inputs.add(name="x", datatype=datatype, shape=shape)
    req.raw_input_contents.append(np.asarray(values, dtype=codec.DTYPES[datatype]).tobytes())
    return req


@pytest.mark.parametrize("datatype", sorted(VALUES))
def test_raw_decoding_equals_numpy_for_every_datatype(datatype):
    values = VALUES[datatype]
    req = _request(datatype, values, [len(values)])
    expected = np.frombuffer(req.raw_input_contents[0], dtype=codec.DTYPES[datatype]).tolist()
    got = codec.request_payload(req)["inputs"][0]
    assert got == {"name": "x", "shape": [len(values)], "datatype": datatype, "data": expected}
    assert [type(v) for v in got["data"]] == [type(v) for v in expected]


def test_nan_decodes_as_nan():
    data = codec.request_payload(_request("FP64", [math.nan, 1.0], [2]))["inputs"][0]["data"]
    assert math.isnan(data[0]) and data[1] == 1.0


def test_raw_data_that_does_not_fit_the_shape_is_refused():
    with pytest.raises(BadRequest, match=r"shape \[4\] needs 4 values, raw data has 3"):
        codec.request_payload(_request("FP64", [1.0, 2.0, 3.0], [4]))
    req = _request("FP64", [1.0], [1])
    req.raw_input_contents[0] = b"\0" * 9
    with pytest.raises(BadRequest, match="not a whole number of FP64 values"):
        codec.request_payload(req)


def test_a_variable_dimension_skips_the_count_check():
    got = codec.request_payload(_request("INT64", [1, 2, 3], [-1]))["inputs"][0]
    assert got["data"] == [1, 2, 3] and got["shape"] == [-1]
