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
