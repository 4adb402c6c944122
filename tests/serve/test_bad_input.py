"""Bad input never gets a 5xx: fixed cases with their statuses, then fuzzing."""

from __future__ import annotations

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serve.conftest import FEATURES


@pytest.fixture
def client(make_server):
    server = make_server(max_rows=50, max_body_bytes=4096)
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def col(name, data, datatype="FP64", shape=None):
    return {"name": name, "shape": shape or [len(data)], "datatype": datatype, "data": data}


CASES = [
    ("/invocations", b"not json", "application/json", 400),
    ("/invocations", b'{"dataframe_split": {"columns": ["f0"], "data": [[1]]}}', "application/json", 422),
    ("/invocations", b'{"instances": [[1, 2, 3, 4]], "inputs": [[1, 2, 3, 4]]}', "application/json", 400),
    ("/invocations", b'{"dataframe_records": [{"f0": "x", "f1": 1, "f2": 1, "f3": 1}]}', "application/json", 422),
    ("/invocations", b'{"dataframe_records": [{"f0": null, "f1": 1, "f2": 1, "f3": 1}]}', "application/json", 422),
    ("/invocations", b"a,b\n1,2\n", "text/csv", 422),
    ("/invocations", b"f0,f1,f2,f3\nx,1,2,3\n", "text/csv", 422),
    ("/invocations", b"<xml/>", "application/xml", 415),
    ("/invocations", b'{"instances": [[1,2,3,4]]}' + b" " * 5000, "application/json", 413),
    ("/invocations", orjson.dumps({"instances": [[1, 2, 3, 4]] * 51}), "application/json", 413),
    ("/v2/models/clf/infer", b"[]", "application/json", 400),
    ("/v2/models/clf/infer", b'{"inputs": []}', "application/json", 400),
    ("/v2/models/clf/infer", orjson.dumps({"inputs": [col("f0", [1, 2], shape=[3])]}), "application/json", 400),
    ("/v2/models/clf/infer", orjson.dumps({"inputs": [col("f0", [1.0])]}), "application/json", 422),
    ("/v2/models/clf/infer", orjson.dumps({"inputs": [col(f, [1.0], "FP99") for f in FEATURES]}), "application/json", 400),
    ("/v2/models/clf/infer", orjson.dumps({"inputs": [col(f, ["a"], "BYTES") for f in FEATURES]}), "application/json", 422),
    ("/v2/models/clf/infer", orjson.dumps({"inputs": [col(f, ["a"]) for f in FEATURES]}), "application/json", 422),
    ("/v2/models/clf/infer", orjson.dumps({"inputs": [col(f, [1.0]) for f in FEATURES],
                                           "outputs": [{"name": "nope"}]}), "application/json", 422),
    ("/v2/models/mixed/infer", orjson.dumps({"inputs": [col("x", [1.0]), col("n", [1.5], "FP64"),
                                                        col("c", ["a"], "BYTES"), col("flag", [True], "BOOL")]}),
     "application/json", 422),
    ("/v2/models/nope/infer", b"{}", "application/json", 404),
    ("/v2/models/clf/versions/99/infer", orjson.dumps({"inputs": [col(f, [1.0]) for f in FEATURES]}),
     "application/json", 404),
    ("/v2/models/clf/infer", b"{}", "text/plain", 415),
    ("/nowhere", b"{}", "application/json", 404),
]


@pytest.mark.parametrize("path,body,ctype,status", CASES)
def test_bad_requests_get_their_status_and_a_json_error(client, path, body, ctype, status):
    r = client.post(path, content=body, headers={"content-type": ctype})
    assert r.status_code == status, r.text
    assert isinstance(r.json()["error"], str) and r.json()["error"]


def test_wrong_method_is_405(client):
    assert client.get("/invocations").status_code == 405
    assert client.delete("/v2/models/clf/infer").status_code == 405


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20)
tensor = st.fixed_dictionaries({}, optional={
    "name": st.sampled_from(FEATURES + ["x", "input-0"]) | st.text(max_size=3),
    "shape": st.lists(st.integers(-1, 5), max_size=3) | json_values,
    "datatype": st.sampled_from(["FP64", "FP32", "INT64", "BOOL", "BYTES", "UINT8", "FP16"]) | json_values,
    "data": st.lists(st.floats() | st.integers(-2**70, 2**70) | st.text(max_size=2) | st.booleans() | st.none(),
                     max_size=6) | json_values,
    "parameters": json_values})
oip_body = st.fixed_dictionaries({}, optional={"inputs": st.lists(tensor, max_size=5) | json_values,
                                               "id": json_values, "parameters": json_values,
                                               "outputs": json_values})
mlflow_body = st.one_of(
    st.fixed_dictionaries({"dataframe_split": st.fixed_dictionaries(
        {}, optional={"columns": st.lists(st.sampled_from(FEATURES), max_size=5) | json_values,
                      "data": st.lists(st.lists(st.floats() | st.text(max_size=2) | st.none(), max_size=5),
                                       max_size=4) | json_values})}),
    st.fixed_dictionaries({"dataframe_records": st.lists(st.dictionaries(st.sampled_from(FEATURES), json_values),
                                                         max_size=3) | json_values}),
    st.fixed_dictionaries({"instances": json_values}),
    st.fixed_dictionaries({"inputs": json_values}),
    json_values)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=oip_body, model=st.sampled_from(["clf", "mixed", "reg"]))
def test_fuzz_oip_never_5xx(client, body, model):
    r = client.post(f"/v2/models/{model}/infer", content=orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)
                    if _serializable(body) else b"{", headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text
    if r.status_code != 200:
        assert "error" in r.json()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=mlflow_body, model=st.sampled_from(["clf", "mixed"]))
def test_fuzz_mlflow_never_5xx(client, body, model):
    r = client.post("/invocations", content=orjson.dumps(body) if _serializable(body) else b"[",
                    headers={"content-type": "application/json", "x-loopml-model": model})
    assert r.status_code < 500, r.text


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=300), path=st.sampled_from(["/invocations", "/v2/models/clf/infer", "/admin/reload"]),
       ctype=st.sampled_from(["application/json", "text/csv", "", "application/octet-stream"]))
def test_fuzz_raw_bytes_never_5xx(client, raw, path, ctype):
    r = client.post(path, content=raw, headers={"content-type": ctype} if ctype else {})
    assert r.status_code < 500, r.text


def _serializable(body) -> bool:
    try:
        orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)
        return True
    except (orjson.JSONEncodeError, TypeError):
        return False


def test_server_still_answers_after_the_fuzz(client):
    r = client.post("/invocations", json={"instances": [[1, 2, 3, 4]]})
    assert r.status_code == 200
