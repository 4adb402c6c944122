"""`loopml optimize` against a real workspace (MLflow on SQLite), then a real server on the result."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from loopml.registry.client import Registry
from loopml.serve.runtimes.base import ONNX_REFUSED_TAG, RUNTIME_TAG
from loopml.serve.server import ServerHandle
from loopml.serve.settings import ServeSettings
from tests.cli.test_main import _one_line_error, loopml
from tests.registry.mlflow_raw import register_raw


def _linear_pipeline():
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(400, 5)), columns=[f"f{i}" for i in range(5)])
    y = (X["f0"] - 2 * X["f1"] + rng.normal(size=400) * 0.3 > 0).astype(int)
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y), X


def _oip_inputs(frame) -> list[dict]:
    out = []
    for c in frame.columns:
        import pandas as pd

        text = not pd.api.types.is_numeric_dtype(frame[c])
        values = [str(v) for v in frame[c]] if text else frame[c].astype(float).tolist()
        out.append({"name": c, "shape": [len(frame)], "datatype": "BYTES" if text else "FP64", "data": values})
    return out


@pytest.fixture
def optimized(registered_model, tmp_path):
    """The demo model and a linear pipeline, both optimized through the CLI."""
    ws, name = registered_model
    model, X = _linear_pipeline()
    lr_version, _ = register_raw(ws, "linear", model, input_example=X.head(3))
    runs = {m: loopml("optimize", m, v, cwd=tmp_path, home=ws.home) for m, v in ((name, "1"), ("linear", lr_version))}
    return ws, name, lr_version, model, X, runs


def test_optimize_adopts_and_the_server_answers_like_native(optimized):
    ws, name, lr_version, linear, X, runs = optimized
    for model, p in runs.items():
        assert p.returncode == 0, p.stderr
        out = " ".join(p.stdout.split())
        assert f"{model} version" in out and "adopted ONNX" in out, out
        assert "0 label mismatches" in out and "max probability difference" in out
    reg = Registry(ws)
    demo_ref = reg.resolve(name, "1")
    assert demo_ref.tags[RUNTIME_TAG] == "onnx" and ONNX_REFUSED_TAG not in demo_ref.tags
    assert reg.resolve("linear", lr_version).tags[RUNTIME_TAG] == "onnx"

    from loopml.demo.data import generate_transactions

    cols = [c["name"] for c in reg.signature(demo_ref)["inputs"]]
    demo_rows = generate_transactions(64, seed=11)[cols]
    native = {name: (reg.load_native(demo_ref), demo_rows), "linear": (linear, X.iloc[:64])}
    settings = ServeSettings(poll_interval_s=0, max_delay_ms=1.0).validate()
    with ServerHandle(ws, [f"{name}/1", f"linear/{lr_version}"], settings) as server:
        for model, (est, rows) in native.items():
            meta = httpx.get(f"{server.url}/v2/models/{model}", timeout=30).json()
            assert meta["platform"] == "onnx", meta
            body = {"inputs": _oip_inputs(rows), "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}
            r = httpx.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=30)
            assert r.status_code == 200, r.text
            outs = {o["name"]: o for o in r.json()["outputs"]}
            assert outs["predict"]["data"] == est.predict(rows).tolist()
            proba = np.asarray(outs["predict_proba"]["data"]).reshape(outs["predict_proba"]["shape"])
            assert np.allclose(proba, est.predict_proba(rows), rtol=0, atol=1e-5)


def test_optimize_unknown_version_is_one_line_exit_2(registered_model, tmp_path):
    ws, name = registered_model
    p = loopml("optimize", name, "7", cwd=tmp_path, home=ws.home)
    assert p.returncode == 2
    err = _one_line_error(p)
    assert f"model '{name}'" in err and "'7'" in err


def test_optimize_quantize_on_a_pytorch_model_then_serve_tensors_over_oip(workspace, tmp_path):
    import json

    import torch

    from tests.serve.runtimes.flavors import mlp, register_saved, save_with, tabular

    X, _ = tabular()
    net = mlp(k=8, out=2, seed=5, hidden=256)
    version = register_saved(workspace, "net", save_with("mlflow.pytorch", net, X[:4], "torch",
                                                         serialization_format="pt2"))
    p = loopml("optimize", "net", version, "--quantize", "--quantize-tolerance", "1", "--json", cwd=tmp_path,
               home=workspace.home)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["adopted"] and out["quantization"]["adopted"] and out["quantization"]["quantized_ops"] == 2
    assert Registry(workspace).resolve("net", version).tags["loopml.onnx_precision"] == "int8"
    settings = ServeSettings(poll_interval_s=0, max_delay_ms=1.0).validate()
    with ServerHandle(workspace, [f"net/{version}"], settings) as server:
        meta = httpx.get(f"{server.url}/v2/models/net", timeout=30).json()
        assert meta["platform"] == "onnx" and meta["inputs"] == [{"name": "input-0", "datatype": "FP32",
                                                                   "shape": [-1, 8]}]
        rows = X[:16]
        body = {"inputs": [{"name": "input-0", "shape": [16, 8], "datatype": "FP32", "data": rows.ravel().tolist()}]}
        r = httpx.post(f"{server.url}/v2/models/net/infer", json=body, timeout=30)
        assert r.status_code == 200, r.text
        got = r.json()["outputs"][0]
        assert got["shape"] == [16, 2]
        with torch.inference_mode():
            want = net(torch.from_numpy(rows)).numpy()
        assert np.allclose(np.asarray(got["data"]).reshape(16, 2), want, atol=0.05)  # INT8: close, not equal
        r = httpx.post(f"{server.url}/invocations", json={"inputs": rows.tolist()}, timeout=30)
        assert r.status_code == 200, r.text
        assert np.allclose(np.asarray(r.json()["predictions"]), want, atol=0.05)
        bad = {"inputs": [{"name": "input-0", "shape": [2, 3], "datatype": "FP32", "data": [0.0] * 6}]}
        r = httpx.post(f"{server.url}/v2/models/net/infer", json=bad, timeout=30)
        assert r.status_code == 422 and "expects shape [-1, 8]" in r.json()["error"]
