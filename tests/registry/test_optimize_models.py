"""ONNX for PyTorch, loopml torch, XGBoost and LightGBM models: converted, checked on the probe
set, adopted, and then served by the ONNX runtime with the native model's answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from loopml.registry.client import Registry
from loopml.registry.optimize import optimize_version
from loopml.serve.runtime import ModelRuntime, Rows
from loopml.serve.runtimes.base import ONNX_REFUSED_TAG, RUNTIME_TAG
from tests.serve.runtimes.flavors import mlp, register_saved, save_with, tabular, train_boosters, workspace_at
from tests.serve.runtimes.test_torch_runtime import train_tabular_torch


@pytest.fixture(scope="module")
def ws_models(tmp_path_factory):
    ws = workspace_at(tmp_path_factory.mktemp("opt") / "ws")
    X, y = tabular()
    boost = train_boosters(X, y)
    net = mlp()
    v = {
        "pt2": ("net", register_saved(ws, "net", save_with("mlflow.pytorch", net, X[:4], "torch",
                                                           serialization_format="pt2"))),
        "script": ("net", register_saved(ws, "net", save_with("mlflow.pytorch", torch.jit.script(net), X[:4], "torch",
                                                              serialization_format="pickle"))),
        "xgb_clf": ("xgb", register_saved(ws, "xgb", save_with("mlflow.xgboost", boost["xgb_clf"], X[:3], "xgboost"))),
        "xgb_reg": ("xgbr", register_saved(ws, "xgbr", save_with("mlflow.xgboost", boost["xgb_reg"], X[:3], "xgboost"))),
        "lgb_clf": ("lgb", register_saved(ws, "lgb", save_with("mlflow.lightgbm", boost["lgb_clf"], X[:3], "lightgbm",
                                                               serialization_format="skops"))),
        "lgb_booster": ("lgbb", register_saved(ws, "lgbb", save_with("mlflow.lightgbm", boost["lgb_booster"], X[:3],
                                                                     "lightgbm"))),
    }
    tab, frame = train_tabular_torch()
    reg = Registry(ws)
    with reg.run("tab") as run:
        uri = run.log_model(tab, frame.head(3), flavor="loopml_torch")
        v["tabular"] = ("tab", reg.register(uri, "tab", run.run_id, {}).version)
    return ws, X, v, frame


def _optimized(ws, versions, key):
    name, version = versions[key]
    reg = Registry(ws)
    ref = reg.resolve(name, version)
    native = ModelRuntime(reg, ref, predict_in_thread=False).load()
    result = optimize_version(reg, ref)
    return reg, native, result, reg.resolve(name, version)


@pytest.mark.parametrize("key", ["pt2", "script", "xgb_clf", "xgb_reg", "lgb_clf"])
def test_tensor_models_are_adopted_and_onnx_answers_like_native(ws_models, key):
    ws, X, versions, _ = ws_models
    reg, native, result, ref = _optimized(ws, versions, key)
    assert result.adopted, result.reason
    assert ref.tags[RUNTIME_TAG] == "onnx" and ONNX_REFUSED_TAG not in ref.tags
    served = ModelRuntime(reg, ref, predict_in_thread=False).load()
    assert served.runtime_name == "onnx" and native.runtime_name != "onnx"
    rows = Rows({"input-0": X[100:164]}, 64)
    a, b = native.predict_sync(rows), served.predict_sync(rows)
    assert a.predict.shape == b.predict.shape
    if native.is_classifier:
        assert np.array_equal(a.predict, b.predict) and np.allclose(a.proba, b.proba, rtol=0, atol=1e-5)
    else:
        assert np.allclose(a.predict, b.predict, rtol=1e-5, atol=1e-5)
    # the parity report is logged beside the ONNX file in the version's run
    with open(reg.client.download_artifacts(ref.run_id, "onnx/parity.json"), encoding="utf-8") as f:
        report = json.load(f)
    assert report["adopted"] and report["probe_rows"] > 500 and report["files"] == ["model.onnx"]


def test_loopml_torch_model_is_one_onnx_graph_with_same_labels(ws_models):
    ws, _, versions, frame = ws_models
    reg, native, result, ref = _optimized(ws, versions, "tabular")
    assert result.adopted, result.reason
    assert result.report["label_mismatches"] == 0 and result.report["max_proba_diff"] <= 1e-5
    served = ModelRuntime(reg, ref, predict_in_thread=False).load()
    assert served.runtime_name == "onnx"
    rows = Rows({c: frame[c].tolist() for c in frame.columns}, len(frame))
    a, b = native.predict_sync(rows), served.predict_sync(rows)
    assert np.array_equal(a.predict, b.predict) and np.allclose(a.proba, b.proba, rtol=0, atol=1e-5)


def test_raw_booster_is_refused_with_the_reason_and_stays_native(ws_models):
    ws, _, versions, _ = ws_models
    reg, _, result, ref = _optimized(ws, versions, "lgb_booster")
    assert not result.adopted and "raw Booster" in result.reason
    assert ref.tags[RUNTIME_TAG] == "native" and "raw Booster" in ref.tags[ONNX_REFUSED_TAG]
    assert ModelRuntime(reg, ref, predict_in_thread=False).load().runtime_name == "lightgbm"


def _fresh_net_version(ws, X):
    return register_saved(ws, "qnet", save_with("mlflow.pytorch", mlp(k=8, out=1, seed=3, hidden=256), X[:4], "torch",
                                                serialization_format="pt2"))


def test_int8_is_adopted_within_tolerance_and_served(ws_models):
    ws, X, _, _ = ws_models
    reg = Registry(ws)
    ref = reg.resolve("qnet", _fresh_net_version(ws, X))
    result = optimize_version(reg, ref, quantize=True, quantize_tolerance=1.0)
    q = result.report["quantization"]
    assert result.adopted and q["adopted"], result.reason
    assert q["int8_bytes"] < q["fp32_bytes"] and q["metric"] == "rmse" and "probe set" in q["evaluated_on"]
    ref = reg.resolve("qnet", ref.version)
    assert ref.tags["loopml.onnx_precision"] == "int8"
    served = ModelRuntime(reg, ref, predict_in_thread=False).load()
    native = ModelRuntime(reg, ref.__class__(**{**ref.__dict__, "tags": {}}), predict_in_thread=False).load()
    assert served.runtime_name == "onnx" and native.runtime_name == "torch"
    rows = Rows({"input-0": X[:50]}, 50)
    diff = np.abs(served.predict_sync(rows).predict - native.predict_sync(rows).predict)
    assert 0 < diff.max() < 1.0  # quantized: close, not equal


def test_int8_beyond_tolerance_is_refused_and_fp32_onnx_kept(ws_models):
    ws, X, _, _ = ws_models
    reg = Registry(ws)
    ref = reg.resolve("qnet", _fresh_net_version(ws, X))
    result = optimize_version(reg, ref, quantize=True, quantize_tolerance=1e-12)
    q = result.report["quantization"]
    assert result.adopted and not q["adopted"] and "INT8 refused: rmse" in q["reason"] and "tolerance 1e-12" in q["reason"]
    assert reg.resolve("qnet", ref.version).tags["loopml.onnx_precision"] == "fp32"
    assert "model.fp32.onnx" not in result.report["files"]


def test_int8_gate_uses_the_holdout_and_its_metric_when_given(ws_models):
    ws, _, versions, frame = ws_models
    reg = Registry(ws)
    ref = reg.resolve(*versions["tabular"])
    y = np.where(frame["a"] > 0, "yes", "no")
    result = optimize_version(reg, ref, quantize=True, quantize_tolerance=0.5, holdout=(frame, y), metric="accuracy")
    assert result.adopted, result.reason
    q = result.report["quantization"]
    assert q["metric"] == "accuracy" and q["evaluated_on"] == "holdout (200 rows with labels)"
    assert 0.0 <= q["fp32_metric"] <= 1.0 and q["adopted"]
    reg.delete_version_tag(ref, "loopml.onnx_precision")


def test_tree_models_have_nothing_to_quantize(ws_models):
    ws, _, versions, _ = ws_models
    reg = Registry(ws)
    result = optimize_version(reg, reg.resolve(*versions["xgb_clf"]), quantize=True)
    assert result.adopted and not result.report["quantization"]["adopted"]
    assert "nothing in this graph quantizes" in result.reason
