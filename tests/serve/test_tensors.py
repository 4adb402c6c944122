"""Tensor inputs (#10): models logged by plain MLflow with tensor signatures, several named
tensors, text tensors or no signature at all, registered through a plain MlflowClient and
served by a real server on 127.0.0.1, over OIP v2 and every MLflow /invocations shape.
Answers are compared with the model's own ``predict``.

The pyfunc models here are ``mlflow.pyfunc.PythonModel`` objects, which MLflow stores with
cloudpickle: loading one runs code, so these tests opt in with LOOPML_ALLOW_UNSAFE_PICKLE=1
(loopml refuses such files otherwise)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import mlflow.pyfunc
from loopml.config import Workspace
from loopml.serve.server import ServerHandle
from loopml.serve.settings import ServeSettings
from tests.registry.mlflow_raw import register_raw

RNG = np.random.default_rng(7)
X20 = RNG.normal(size=(60, 20))
Y20 = (X20[:, 0] + X20[:, 3] > 0).astype(int)


class TwoTensors(mlflow.pyfunc.PythonModel):
    """A dict of two named tensors: a [-1, 3] float64, b [-1, 2] int64."""

    def predict(self, context, model_input, params=None):
        return model_input["a"].sum(axis=1) + 10.0 * model_input["b"].sum(axis=1)


class ImageSum(mlflow.pyfunc.PythonModel):
    """An image-like [-1, 3, 4, 4] float32 tensor, flattened and summed per row."""

    def predict(self, context, model_input, params=None):
        x = np.asarray(model_input, dtype=np.float64)
        return x.reshape(len(x), -1).sum(axis=1)


class TextLength(mlflow.pyfunc.PythonModel):
    """A text tensor [-1] (BYTES over OIP): the length of each string."""

    def predict(self, context, model_input, params=None):
        return np.array([float(len(s)) for s in np.asarray(model_input).ravel()])


def _register_pyfunc(ws: Workspace, name: str, model, example) -> str:
    """Save a pyfunc model with MLflow (signature inferred from ``example``), log it to a run
    and register it with a plain MlflowClient, as a user outside loopml would."""
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    client = MlflowClient(tracking_uri=ws.tracking_uri, registry_uri=ws.tracking_uri)
    exp = client.get_experiment_by_name("raw")
    exp_id = exp.experiment_id if exp else client.create_experiment("raw", artifact_location=(ws.home / "raw").as_uri())
    run = client.create_run(exp_id)
    local = ws.home.parent / f"raw-{uuid.uuid4().hex[:8]}"
    signature = infer_signature(example, model.predict(None, example))
    mlflow.pyfunc.save_model(str(local), python_model=model, signature=signature, input_example=example,
                             pip_requirements=["numpy"])
    client.log_artifacts(run.info.run_id, str(local), "model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model(name)
    mv = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    return str(mv.version)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One workspace, every model registered, one server serving them all."""
    from sklearn.linear_model import LogisticRegression

    mp = pytest.MonkeyPatch()
    mp.setenv("LOOPML_ALLOW_UNSAFE_PICKLE", "1")  # pyfunc PythonModels are cloudpickled (see module docstring)
    ws = Workspace.from_env(Path(tmp_path_factory.mktemp("tensors")) / "ws").init()
    lr = LogisticRegression().fit(X20, Y20)
    models = {"lr20": lr, "nosig": LogisticRegression(C=0.5).fit(X20, Y20)}
    register_raw(ws, "lr20", lr, input_example=X20[:2])  # a NumPy example: tensor signature [-1, 20]
    register_raw(ws, "nosig", models["nosig"])  # neither signature nor example
    examples = {"multi": {"a": RNG.normal(size=(2, 3)), "b": RNG.integers(0, 5, size=(2, 2))},
                "image": RNG.normal(size=(2, 3, 4, 4)).astype(np.float32),
                "text": np.array(["hello", "tensor world"], dtype=object)}
    for name, model in (("multi", TwoTensors()), ("image", ImageSum()), ("text", TextLength())):
        _register_pyfunc(ws, name, model, examples[name])
        models[name] = model
    names = ["lr20", "nosig", "multi", "image", "text"]
    h = ServerHandle(ws, [f"{n}/1" for n in names], ServeSettings(poll_interval_s=0.1, max_delay_ms=1.0).validate())
    h.start()
    try:
        yield h, models
    finally:
        h.stop()
        mp.undo()


def _infer(h, model: str, inputs: list[dict], **extra) -> httpx.Response:
    return httpx.post(f"{h.url}/v2/models/{model}/infer", json={"inputs": inputs, **extra}, timeout=30)


def _invoke(h, model: str, body, ctype: str = "application/json") -> httpx.Response:
    kw = {"json": body} if ctype == "application/json" else {"content": body}
    return httpx.post(f"{h.url}/invocations", headers={"content-type": ctype, "x-loopml-model": model},
                      timeout=30, **kw)


# -- a [-1, 20] tensor signature (LogisticRegression logged with a NumPy input example) ---------

def test_tensor_signature_metadata_lists_the_tensor(served):
    h, _ = served
    meta = httpx.get(f"{h.url}/v2/models/lr20").json()
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 20]}]
    assert meta["platform"] == "sklearn"


def test_oip_tensor_answers_like_the_model(served):
    h, models = served
    X = X20[:5]
    r = _infer(h, "lr20", [{"name": "input-0", "shape": [5, 20], "datatype": "FP64", "data": X.ravel().tolist()}],
               outputs=[{"name": "predict"}, {"name": "predict_proba"}])
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert out["predict"]["data"] == models["lr20"].predict(X).tolist()
    assert np.allclose(np.reshape(out["predict_proba"]["data"], out["predict_proba"]["shape"]),
                       models["lr20"].predict_proba(X), rtol=0, atol=1e-12)


def test_oip_single_row_nested_data_under_any_name(served):
    # the request: input-0, [1, 20], FP64; nested data and another tensor name work too
    h, models = served
    for name in ("input-0", "x"):
        r = _infer(h, "lr20", [{"name": name, "shape": [1, 20], "datatype": "FP64", "data": [X20[7].tolist()]}])
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == models["lr20"].predict(X20[7:8]).tolist()


@pytest.mark.parametrize("shape", ["inputs", "instances", "dataframe_split", "dataframe_records", "csv"])
def test_every_invocations_shape_answers_like_the_model(served, shape):
    h, models = served
    X = X20[10:14]
    cols = [f"c{j}" for j in range(20)]
    if shape == "csv":
        r = _invoke(h, "lr20", pd.DataFrame(X, columns=cols).to_csv(index=False).encode(), "text/csv")
    else:
        body = {"inputs": X.tolist(), "instances": X.tolist(),
                "dataframe_split": {"columns": cols, "data": X.tolist()},
                "dataframe_records": pd.DataFrame(X, columns=cols).to_dict(orient="records")}[shape]
        r = _invoke(h, "lr20", {shape: body})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == models["lr20"].predict(X).tolist()


def test_mlflow_scoring_client_talks_to_it(served):
    # MLflow's own client (what `mlflow models predict`-style tooling uses) with an ndarray and a DataFrame
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    h, models = served
    client = ScoringServerClient("127.0.0.1", h.port)
    X = X20[20:23]
    # no x-loopml-model header: /invocations answers for the first endpoint served (lr20)
    got = client.invoke(X).get_predictions(predictions_format="ndarray")
    assert got.tolist() == models["lr20"].predict(X).tolist()
    got = client.invoke(pd.DataFrame(X)).get_predictions(predictions_format="ndarray")
    assert got.tolist() == models["lr20"].predict(X).tolist()


# -- bad tensors: one 4xx naming model, input and expectation ------------------------------------

@pytest.mark.parametrize("tensor, words", [
    ({"name": "input-0", "shape": [1, 19], "datatype": "FP64", "data": [0.0] * 19}, ["[-1, 20]", "[1, 19]"]),
    ({"name": "input-0", "shape": [20], "datatype": "FP64", "data": [0.0] * 20}, ["[-1, 20]", "[20]"]),
    ({"name": "input-0", "shape": [1, 20], "datatype": "BYTES", "data": ["a"] * 20}, ["FP64 [-1, 20]", "BYTES"]),
])
def test_wrong_tensor_is_one_clear_4xx(served, tensor, words):
    h, _ = served
    r = _infer(h, "lr20", [tensor])
    assert 400 <= r.status_code < 500, r.text
    msg = r.json()["error"]
    assert "lr20" in msg and "input-0" in msg
    for w in words:
        assert w in msg


@pytest.mark.parametrize("body", [
    {"inputs": [[0.0] * 19]},
    {"inputs": [["a"] * 20]},
    {"inputs": [[0.0] * 20, [0.0] * 19]},
    {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0]]}},
])
def test_wrong_invocations_tensor_is_4xx(served, body):
    h, _ = served
    r = _invoke(h, "lr20", body)
    assert 400 <= r.status_code < 500, r.text
    assert "lr20" in r.json()["error"] and "input-0" in r.json()["error"]


# -- several named tensors (a pyfunc taking a dict) ----------------------------------------------

def test_named_tensors_over_oip_and_invocations(served):
    h, models = served
    a, b = RNG.normal(size=(4, 3)), RNG.integers(0, 9, size=(4, 2))
    want = models["multi"].predict(None, {"a": a, "b": b}).tolist()
    meta = httpx.get(f"{h.url}/v2/models/multi").json()
    assert meta["inputs"] == [{"name": "a", "datatype": "FP64", "shape": [-1, 3]},
                              {"name": "b", "datatype": "INT64", "shape": [-1, 2]}]
    r = _infer(h, "multi", [{"name": "b", "shape": [4, 2], "datatype": "INT64", "data": b.ravel().tolist()},
                            {"name": "a", "shape": [4, 3], "datatype": "FP64", "data": a.tolist()}])
    assert r.status_code == 200, r.text
    assert np.allclose(r.json()["outputs"][0]["data"], want)
    for body in ({"inputs": {"a": a.tolist(), "b": b.tolist()}},
                 {"instances": [{"a": a[i].tolist(), "b": b[i].tolist()} for i in range(4)]},
                 {"dataframe_records": [{"a": a[i].tolist(), "b": b[i].tolist()} for i in range(4)]},
                 {"dataframe_split": {"columns": ["a", "b"], "data": [[a[i].tolist(), b[i].tolist()] for i in range(4)]}}):
        r = _invoke(h, "multi", body)
        assert r.status_code == 200, (body, r.text)
        assert np.allclose(r.json()["predictions"], want), body


def test_named_tensors_bad_input(served):
    h, _ = served
    r = _infer(h, "multi", [{"name": "a", "shape": [1, 3], "datatype": "FP64", "data": [1.0, 2.0, 3.0]}])
    assert r.status_code == 422 and "missing input(s) ['b']" in r.json()["error"], r.text
    r = _infer(h, "multi", [{"name": "a", "shape": [1, 3], "datatype": "FP64", "data": [1.0, 2.0, 3.0]},
                            {"name": "b", "shape": [1, 2], "datatype": "FP64", "data": [1.5, 2.0]}])
    assert r.status_code == 422 and "'b'" in r.json()["error"] and "integers" in r.json()["error"], r.text
    r = _invoke(h, "multi", {"inputs": {"a": [[1.0, 2.0, 3.0]], "c": [[1, 2]]}})
    assert r.status_code == 422 and "'c'" in r.json()["error"], r.text


# -- an image-like [-1, 3, 4, 4] tensor ---------------------------------------------------------

def test_image_tensor(served):
    h, models = served
    x = RNG.normal(size=(3, 3, 4, 4)).astype(np.float32)
    want = models["image"].predict(None, x)
    meta = httpx.get(f"{h.url}/v2/models/image").json()
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 3, 4, 4]}]
    r = _infer(h, "image", [{"name": "input-0", "shape": [3, 3, 4, 4], "datatype": "FP32",
                             "data": x.ravel().tolist()}])
    assert r.status_code == 200, r.text
    assert np.allclose(r.json()["outputs"][0]["data"], want, atol=1e-5)
    r = _invoke(h, "image", {"inputs": x.tolist()})
    assert r.status_code == 200 and np.allclose(r.json()["predictions"], want, atol=1e-5), r.text
    # one column of flattened rows, as MLflow writes a tensor into a DataFrame
    r = _invoke(h, "image", {"dataframe_split": {"columns": ["input-0"], "data": [[row.ravel().tolist()] for row in x]}})
    assert r.status_code == 200 and np.allclose(r.json()["predictions"], want, atol=1e-5), r.text
    bad = _infer(h, "image", [{"name": "input-0", "shape": [1, 3, 4, 5], "datatype": "FP32", "data": [0.0] * 60}])
    assert bad.status_code == 422 and "[-1, 3, 4, 4]" in bad.json()["error"], bad.text


# -- text: a BYTES tensor ------------------------------------------------------------------------

def test_bytes_tensor_for_text(served):
    h, models = served
    texts = ["a", "three words here", "ünïcode"]
    want = models["text"].predict(None, np.array(texts, dtype=object)).tolist()
    meta = httpx.get(f"{h.url}/v2/models/text").json()
    assert meta["inputs"] == [{"name": "input-0", "datatype": "BYTES", "shape": [-1]}]
    r = _infer(h, "text", [{"name": "input-0", "shape": [3], "datatype": "BYTES", "data": texts}])
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == want, r.text
    for body in ({"inputs": texts}, {"dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}}):
        r = _invoke(h, "text", body)
        assert r.status_code == 200 and r.json()["predictions"] == want, (body, r.text)
    r = _invoke(h, "text", b"text\na\nthree words here\n\xc3\xbcn\xc3\xafcode\n", "text/csv")
    assert r.status_code == 200 and r.json()["predictions"] == want, r.text
    bad = _infer(h, "text", [{"name": "input-0", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]}])
    assert bad.status_code == 422 and "BYTES" in bad.json()["error"] and "text" in bad.json()["error"], bad.text


# -- no signature: the input is taken as given ---------------------------------------------------

def test_no_signature_metadata_says_so(served):
    h, _ = served
    meta = httpx.get(f"{h.url}/v2/models/nosig").json()
    assert meta["inputs"] == []
    assert meta["parameters"]["signature"] == "none"


def test_no_signature_model_takes_input_as_given(served):
    h, models = served
    X = X20[30:36]
    want = models["nosig"].predict(X).tolist()
    r = _infer(h, "nosig", [{"name": "whatever", "shape": [6, 20], "datatype": "FP64", "data": X.ravel().tolist()}])
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == want, r.text
    cols = [f"c{j}" for j in range(20)]
    for body in ({"inputs": X.tolist()}, {"instances": X.tolist()},
                 {"dataframe_split": {"columns": cols, "data": X.tolist()}},
                 {"dataframe_records": pd.DataFrame(X, columns=cols).to_dict(orient="records")}):
        r = _invoke(h, "nosig", body)
        assert r.status_code == 200 and r.json()["predictions"] == want, (list(body), r.text)
    r = _invoke(h, "nosig", pd.DataFrame(X, columns=cols).to_csv(index=False).encode(), "text/csv")
    assert r.status_code == 200 and r.json()["predictions"] == want, r.text
    # what the model cannot take is still the client's mistake, named
    bad = _infer(h, "nosig", [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1.0, 2.0, 3.0]}])
    assert bad.status_code == 422 and "nosig" in bad.json()["error"], bad.text


def test_batched_requests_keep_their_layout():
    # a model without a signature reads a table body as a DataFrame and a tensor body as an
    # array; the batcher's concatenation must not lose which one a batch is
    from loopml.serve.batching import merge_rows
    from loopml.serve.runtime import Rows

    parts = [Rows({"c0": [1.0], "c1": [2.0]}, 1, layout="frame"), Rows({"c0": [3.0], "c1": [4.0]}, 1, layout="frame")]
    merged = merge_rows(parts)
    assert merged.layout == "frame" and merged.columns == {"c0": [1.0, 3.0], "c1": [2.0, 4.0]}
