"""The XGBoost / LightGBM runtime on real models logged with mlflow.xgboost / mlflow.lightgbm."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loopml.errors import UnsafeModelFormat
from loopml.registry.client import Registry
from loopml.serve.runtime import ModelRuntime, Rows
from tests.serve.runtimes.flavors import register_saved, save_with, tabular, train_boosters, workspace_at


@pytest.fixture(scope="module")
def boosters(tmp_path_factory):
    ws = workspace_at(tmp_path_factory.mktemp("boost") / "ws")
    X, y = tabular()
    m = train_boosters(X, y)
    frame = pd.DataFrame(X.astype(np.float64), columns=[f"f{i}" for i in range(X.shape[1])])
    import lightgbm as lgb
    m["lgb_frame"] = lgb.LGBMClassifier(n_estimators=30, num_leaves=8, n_jobs=1, verbose=-1).fit(frame, y)
    versions = {
        "xgb_clf": register_saved(ws, "xgb", save_with("mlflow.xgboost", m["xgb_clf"], X[:3], "xgboost")),
        "xgb_reg": register_saved(ws, "xgbr", save_with("mlflow.xgboost", m["xgb_reg"], X[:3], "xgboost")),
        "lgb_clf": register_saved(ws, "lgb", save_with("mlflow.lightgbm", m["lgb_clf"], X[:3], "lightgbm",
                                                      serialization_format="skops")),
        "lgb_pickle": register_saved(ws, "lgb", save_with("mlflow.lightgbm", m["lgb_clf"], X[:3], "lightgbm",
                                                         serialization_format="cloudpickle")),
        "lgb_booster": register_saved(ws, "lgbb", save_with("mlflow.lightgbm", m["lgb_booster"], X[:3], "lightgbm")),
        "lgb_frame": register_saved(ws, "lgbf", save_with("mlflow.lightgbm", m["lgb_frame"], frame.head(3), "lightgbm",
                                                         serialization_format="skops")),
    }
    return ws, X, m, versions, frame


def _load(ws, name, version, **kw):
    reg = Registry(ws, **kw)
    return ModelRuntime(reg, reg.resolve(name, version), predict_in_thread=False).load()


@pytest.mark.parametrize("key,name,runtime", [("xgb_clf", "xgb", "xgboost"), ("lgb_clf", "lgb", "lightgbm")])
def test_classifier_answers_as_its_own_predict_and_predict_proba(boosters, key, name, runtime):
    ws, X, m, versions, _ = boosters
    rt = _load(ws, name, versions[key])
    assert rt.runtime_name == runtime and rt.is_classifier and rt.fallback_reason is None
    pred = rt.predict_sync(Rows({"input-0": X[:60]}, 60))
    assert np.array_equal(pred.predict, m[key].predict(X[:60]))
    assert np.array_equal(pred.proba, m[key].predict_proba(X[:60]))


def test_regressor_and_raw_booster_answer_their_values(boosters):
    ws, X, m, versions, _ = boosters
    rt = _load(ws, "xgbr", versions["xgb_reg"])
    assert rt.runtime_name == "xgboost" and not rt.is_classifier
    assert np.allclose(rt.predict_sync(Rows({"input-0": X[:20]}, 20)).predict, m["xgb_reg"].predict(X[:20]), rtol=0,
                       atol=0)
    rt = _load(ws, "lgbb", versions["lgb_booster"])
    assert rt.runtime_name == "lightgbm"
    assert np.array_equal(rt.predict_sync(Rows({"input-0": X[:20]}, 20)).predict, m["lgb_booster"].predict(X[:20]))


def test_column_signature_model_takes_named_columns(boosters):
    ws, X, m, versions, frame = boosters
    rt = _load(ws, "lgbf", versions["lgb_frame"])
    assert rt.layout == "columns" and rt.column_names == list(frame.columns)
    pred = rt.predict_sync(Rows({c: frame[c].tolist()[:25] for c in frame.columns}, 25))
    assert np.array_equal(pred.predict, m["lgb_frame"].predict(frame.head(25)))


def test_pickled_lightgbm_is_refused_unless_unsafe_pickle_is_allowed(boosters):
    ws, X, m, versions, _ = boosters
    with pytest.raises(UnsafeModelFormat, match="cloudpickle"):
        _load(ws, "lgb", versions["lgb_pickle"])
    rt = _load(ws, "lgb", versions["lgb_pickle"], allow_unsafe_pickle=True)
    assert rt.runtime_name == "lightgbm"
    assert np.array_equal(rt.predict_sync(Rows({"input-0": X[:9]}, 9)).predict, m["lgb_clf"].predict(X[:9]))
