"""OIP v2 and MLflow scoring protocol against a real server on 127.0.0.1."""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.serve.conftest import FEATURES

ROWS = [[1.0, 2.0, 3.0, 4.0], [-1.0, -2.0, 0.0, 0.5], [0.3, -0.1, 2.0, -1.0]]


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def expected(trained, name="clf", rows=ROWS):
    return trained[name].predict(pd.DataFrame(rows, columns=FEATURES)).tolist()


def test_health_and_server_metadata(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    meta = client.get("/v2").json()
    assert meta["name"] == "loopml" and "version" in meta
    assert client.get("/ping").status_code == 200
    assert client.get("/health").status_code == 200
    assert client.get("/version").text.count(".") >= 1


def test_model_metadata_from_signature(client):
    meta = client.get("/v2/models/mixed").json()
    assert meta["name"] == "mixed" and meta["versions"] == ["1"]
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
        ("x", "FP64"), ("n", "INT64"), ("c", "BYTES"), ("flag", "BOOL")]
    assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]
    assert client.get("/v2/models/clf/versions/1").json()["versions"] == ["1"]
    assert client.get("/v2/models/clf/ready").json() == {"name": "clf", "ready": True}
    assert client.get("/v2/models/clf/versions/7").status_code == 404
    assert client.get("/v2/models/nope").status_code == 404
    assert "error" in client.get("/v2/models/nope/ready").json()


def test_oip_infer_per_column_tensors_with_id_outputs_parameters(client, trained):
    body = {"id": "req-1", "parameters": {"content_type": "pd"},
            "inputs": [{"name": f, "shape": [3], "datatype": "FP64", "data": [r[j] for r in ROWS]}
                       for j, f in enumerate(FEATURES)],
            "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}
    r = client.post("/v2/models/clf/infer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "req-1" and out["model_name"] == "clf" and out["model_version"] == "1"
    assert out["parameters"] == {"content_type": "pd"}
    pred, proba = out["outputs"]
    assert pred["name"] == "predict" and pred["shape"] == [3] and pred["datatype"] == "INT64"
    assert pred["data"] == expected(trained)
    want = trained["clf"].predict_proba(pd.DataFrame(ROWS, columns=FEATURES))
    assert proba["shape"] == [3, 2]
    assert np.allclose(np.array(proba["data"]).reshape(3, 2), want)
    assert r.headers["x-loopml-model-version"] == "1"
    assert r.headers["x-loopml-variant"] == "champion"
    assert r.headers["x-request-id"] == "req-1"


@pytest.mark.parametrize("data", [ROWS, sum(ROWS, [])])
def test_oip_infer_one_2d_tensor_nested_or_flat(client, trained, data):
    body = {"inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP32", "data": data}]}
    r = client.post("/v2/models/clf/infer", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == expected(trained)
    assert len(r.json()["id"]) > 0


def test_oip_infer_mixed_types_and_version_route(client, trained):
    body = {"inputs": [
        {"name": "x", "shape": [2, 1], "datatype": "FP64", "data": [[1.5], [-1.0]]},
        {"name": "n", "shape": [2], "datatype": "INT32", "data": [1, 3]},
        {"name": "c", "shape": [2], "datatype": "BYTES", "data": ["b", "a"]},
        {"name": "flag", "shape": [2], "datatype": "BOOL", "data": [True, False]}]}
    r = client.post("/v2/models/mixed/versions/1/infer", json=body)
    assert r.status_code == 200, r.text
    X = pd.DataFrame({"x": [1.5, -1.0], "n": [1, 3], "c": ["b", "a"], "flag": [True, False]})
    assert r.json()["outputs"][0]["data"] == trained["mixed"].predict(X).tolist()
    assert r.json()["outputs"][0]["datatype"] == "BYTES"
    assert client.post("/v2/models/mixed/versions/9/infer", json=body).status_code == 404


def test_mlflow_formats_agree_with_the_model(client, trained):
    want = {"predictions": expected(trained)}
    records = [dict(zip(FEATURES, r)) for r in ROWS]
    bodies = [
        {"dataframe_split": {"columns": FEATURES, "data": ROWS}},
        {"dataframe_split": {"columns": FEATURES[::-1], "data": [r[::-1] for r in ROWS]}},
        {"dataframe_records": records},
        {"instances": records},
        {"inputs": {f: [r[j] for r in ROWS] for j, f in enumerate(FEATURES)}},
        {"inputs": ROWS, "params": {"x": 1}},
    ]
    for body in bodies:
        r = client.post("/invocations", json=body)
        assert r.status_code == 200, (body, r.text)
        assert r.json() == want
        assert r.headers["x-loopml-model"] == "clf"
    csv = "f0,f1,f2,f3\n" + "\n".join(",".join(map(str, r)) for r in ROWS) + "\n"
    r = client.post("/invocations", content=csv, headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.json() == want


def test_invocations_picks_model_by_header_or_query(client, trained):
    body = {"dataframe_split": {"columns": FEATURES, "data": ROWS}}
    r = client.post("/invocations", json=body, headers={"x-loopml-model": "reg"})
    want = trained["reg"].predict(pd.DataFrame(ROWS, columns=FEATURES))
    assert np.allclose(r.json()["predictions"], want)
    assert client.post("/invocations?model=reg", json=body).headers["x-loopml-model"] == "reg"
    assert client.post("/invocations?model=zzz", json=body).status_code == 404


def test_mlflow_client_helper_gets_same_answers(client, server, trained):
    """MLflow's own scoring client (what `mlflow models predict`-style tools use)."""
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    c = ScoringServerClient("127.0.0.1", server.port)
    out = c.invoke(pd.DataFrame(ROWS, columns=FEATURES))
    assert np.asarray(out.get_predictions(predictions_format="ndarray")).tolist() == expected(trained)


def test_deadline_header(client):
    body = {"dataframe_split": {"columns": FEATURES, "data": ROWS}}
    assert client.post("/invocations", json=body, headers={"x-loopml-deadline-ms": "5000"}).status_code == 200
    r = client.post("/invocations", json=body, headers={"x-loopml-deadline-ms": "soon"})
    assert r.status_code == 400 and "deadline" in r.json()["error"]


# -- a challenger with another feature set is decoded with its own signature (#8) ----------------

WIDE = FEATURES + ["f4"]
WIDE_SIG = {"inputs": [{"name": f, "type": "double"} for f in WIDE], "outputs": []}
TOKEN = "adm"


@pytest.fixture
def wide_server(make_server, fake_registry, trained):
    """'ext': champion v1 on f0..f3, challenger v2 (a real fitted model) on f0..f4."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(5)
    X = pd.DataFrame(rng.normal(size=(300, 5)), columns=WIDE)
    wide = LogisticRegression().fit(X, (X["f0"] + X["f4"] > 0).astype(int))
    fake_registry.add("ext", trained["clf"], {"inputs": [{"name": f, "type": "double"} for f in FEATURES]},
                      "champion")
    fake_registry.add("ext", wide, WIDE_SIG, "challenger")
    return make_server(endpoints=("ext",), admin_token=TOKEN), wide


def _policy(server, policy):
    r = httpx.put(server.url + "/admin/models/ext/traffic", json=policy,
                  headers={"authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert r.status_code == 200, r.text


def _shadow_errors(server) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(server.url + "/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "loopml_shadow_errors_total" and s.labels.get("model") == "ext")


def _oip(row: dict) -> dict:
    return {"inputs": [{"name": k, "shape": [1], "datatype": "FP64", "data": [v]} for k, v in row.items()]}


def test_shadow_with_an_extra_feature_is_decoded_with_its_own_signature(wide_server, workspace):
    server, wide = wide_server
    _policy(server, {"kind": "shadow"})
    full = dict(zip(WIDE, [1.0, 2.0, 3.0, 4.0, -5.0]))
    for i in range(4):  # both feature sets present: champion answers, the shadow predicts too
        r = httpx.post(server.url + "/invocations", json={"dataframe_records": [full]},
                       headers={"x-request-id": f"m{i}"})
        assert r.status_code == 200 and r.headers["x-loopml-model-version"] == "1"
        r = httpx.post(server.url + "/v2/models/ext/infer", json=_oip(full), headers={"x-request-id": f"o{i}"})
        assert r.status_code == 200, r.text
        assert r.headers["x-loopml-model-version"] == "1"
    # the shadow predictions are logged; none failed
    server.stop()
    from loopml.monitor.predlog import read_predictions

    log = read_predictions(workspace.predictions, "ext")
    shadow = log[log["variant"] == "shadow"]
    assert len(shadow) == 8 and set(shadow["version"]) == {"2"}
    want = wide.predict(pd.DataFrame([full], columns=WIDE))[0]
    assert set(shadow["out.prediction"]) == {want}
    assert set(shadow["request_id"]) == {f"m{i}" for i in range(4)} | {f"o{i}" for i in range(4)}


def test_a_request_without_the_challengers_feature_is_a_shadow_error_not_a_champion_error(wide_server, workspace):
    from loopml.monitor.predlog import read_predictions
    from tests.serve.helpers import wait_for

    server, _ = wide_server
    _policy(server, {"kind": "shadow"})
    narrow = dict(zip(FEATURES, [1.0, 2.0, 3.0, 4.0]))
    full = {**narrow, "f4": 0.5}
    r = httpx.post(server.url + "/invocations", json={"dataframe_records": [narrow]})
    assert r.status_code == 200
    assert wait_for(lambda: _shadow_errors(server) == 1)
    r = httpx.post(server.url + "/invocations", json={"dataframe_records": [full]})
    assert r.status_code == 200
    r = httpx.post(server.url + "/v2/models/ext/infer", json=_oip(full))
    assert r.status_code == 200
    server.stop()  # waits for the shadow predictions in flight
    log = read_predictions(workspace.predictions, "ext")
    assert len(log[log["variant"] == "shadow"]) == 2  # the two full requests reached the shadow


def test_canary_challenger_with_an_extra_feature_answers_requests_that_carry_it(wide_server):
    server, wide = wide_server
    _policy(server, {"kind": "canary", "weight": 1.0})
    full = dict(zip(WIDE, [1.0, 2.0, 3.0, 4.0, -5.0]))
    want = int(wide.predict(pd.DataFrame([full], columns=WIDE))[0])
    r = httpx.post(server.url + "/v2/models/ext/infer", json=_oip(full))
    assert r.status_code == 200, r.text
    assert r.headers["x-loopml-model-version"] == "2" and r.json()["outputs"][0]["data"] == [want]
    narrow = {k: v for k, v in full.items() if k != "f4"}
    r = httpx.post(server.url + "/v2/models/ext/infer", json=_oip(narrow))
    assert r.status_code == 422 and "f4" in r.json()["error"]
