"""optimize_version: real skl2onnx conversion, real onnxruntime, parity decides adoption."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.linear_model import LogisticRegression

from loopml.registry.optimize import optimize_version, probe_frame
from loopml.serve.runtimes.base import ONNX_REFUSED_TAG, RUNTIME_TAG
import pytest

from tests.serve.conftest import MIXED_SIG, NUM_SIG, clf_model, mixed_model, numeric_frame
from tests.serve.runtimes.source import FolderSource


@pytest.fixture(scope="module")
def trained():
    return {"clf": clf_model(), "mixed": mixed_model()}


class Doubler(BaseEstimator, TransformerMixin):
    """A custom transformer skl2onnx knows nothing about."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.asarray(X, dtype=float) * 2


def test_linear_pipeline_is_adopted_with_parity_report(tmp_path, trained):
    src = FolderSource(tmp_path, trained["clf"], NUM_SIG, numeric_frame(3, 5))
    result = optimize_version(src, src.ref)
    assert result.adopted, result.reason
    assert src.tags[RUNTIME_TAG] == "onnx" and ONNX_REFUSED_TAG not in src.tags
    report = json.load(open(tmp_path / "run" / "onnx" / "parity.json"))
    assert report["label_mismatches"] == 0 and report["max_proba_diff"] <= 1e-5
    assert os.path.exists(tmp_path / "run" / "onnx" / "model.onnx")


def test_text_columns_with_one_hot_are_adopted(tmp_path, trained):
    example = pd.DataFrame({"x": [0.5], "n": [2], "c": ["b"], "flag": [True]})
    src = FolderSource(tmp_path, trained["mixed"], MIXED_SIG, example)
    result = optimize_version(src, src.ref)
    assert result.adopted, result.reason


def test_custom_transformer_is_refused_with_reason(tmp_path):
    X = numeric_frame(200, 3)
    model = Pipeline([("double", Doubler()), ("lr", LogisticRegression())]).fit(X, X["f0"] > 0)
    src = FolderSource(tmp_path, model, NUM_SIG)
    result = optimize_version(src, src.ref)
    assert not result.adopted
    assert src.tags[RUNTIME_TAG] == "native"
    assert "skl2onnx cannot convert" in src.tags[ONNX_REFUSED_TAG] and "Doubler" in src.tags[ONNX_REFUSED_TAG]


def test_non_sklearn_flavor_is_refused(tmp_path, trained):
    src = FolderSource(tmp_path, trained["clf"], NUM_SIG, flavors=("python_function",))
    result = optimize_version(src, src.ref)
    assert not result.adopted and "no ONNX converter for flavors ['python_function']" in result.reason


def test_external_data_file_travels_with_the_model(tmp_path):
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 200)), columns=[f"x{i}" for i in range(200)])
    model = LogisticRegression().fit(X, X["x0"] > 0)  # 200 coefficients: a tensor ONNX may keep apart
    sig = {"inputs": [{"name": c, "type": "double"} for c in X.columns], "outputs": []}
    src = FolderSource(tmp_path, model, sig)
    result = optimize_version(src, src.ref, external_data_bytes=0)
    assert result.adopted, result.reason
    assert os.path.exists(tmp_path / "run" / "onnx" / "model.onnx.data")


def test_probe_set_holds_example_unseen_and_missing_categories():
    example = pd.DataFrame({"x": [0.5], "n": [2], "c": ["b"], "flag": [True]})
    probe = probe_frame(MIXED_SIG["inputs"], example, None, 20)
    assert len(probe) == 21 and probe["c"].iloc[0] == "b"
    assert probe["c"].isna().any() and (probe["c"] == "\u00abunseen\u00bb").any()
    assert probe["n"].dtype == np.int64


def _tree_source(tmp_path, model, X, sig_type="double"):
    sig = {"inputs": [{"name": c, "type": sig_type} for c in X.columns], "outputs": []}
    return FolderSource(tmp_path, model, sig, X.head(3))


def _tree_frame(n=1500, k=6, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, k)), columns=[f"x{i}" for i in range(k)])
    X.iloc[::11, 2] = np.nan  # HistGradientBoosting learns where missing values go
    return X


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regressor", "poisson"])
def test_hist_gradient_boosting_is_adopted_in_double_precision(tmp_path, kind):
    """Failed before: TreeEnsembleClassifier/Regressor in onnxruntime only load as float32,
    whose rounded thresholds put rows near a split on the other side (0.02-0.04 off)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    X = _tree_frame()
    signal = X["x0"] + X["x1"] * X["x3"] + np.nan_to_num(X["x2"])
    model = {"binary": lambda: HistGradientBoostingClassifier(max_iter=30).fit(X, signal > 0),
             "multiclass": lambda: HistGradientBoostingClassifier(max_iter=40).fit(X, np.digitize(signal, [-1, 1])),
             "regressor": lambda: HistGradientBoostingRegressor(max_iter=30).fit(X, signal),
             "poisson": lambda: HistGradientBoostingRegressor(loss="poisson", max_iter=30).fit(X, np.exp(signal / 3))}[kind]()
    src = _tree_source(tmp_path, model, X)
    result = optimize_version(src, src.ref)
    assert result.adopted, result.reason
    diff = result.report.get("max_proba_diff", result.report.get("max_value_diff"))
    assert diff <= 1e-9  # double all the way, not merely within the gate


def test_hist_gradient_boosting_with_preprocessing_stays_double(tmp_path):
    """Failed before: onnxruntime has no double ai.onnx.ml Imputer, so a median imputer in front
    of the trees sent the whole graph to float32."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer

    X = _tree_frame(seed=1)
    model = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler()),
                      ("hgb", HistGradientBoostingClassifier(max_iter=30))]).fit(X, X["x0"] + X["x1"] > 0)
    src = _tree_source(tmp_path, model, X)
    result = optimize_version(src, src.ref)
    assert result.adopted and result.report["max_proba_diff"] <= 1e-9, result.reason


def test_random_forest_is_adopted(tmp_path):
    from sklearn.ensemble import RandomForestClassifier

    X = _tree_frame(seed=2).fillna(0.0)
    model = RandomForestClassifier(30, max_depth=8, random_state=0).fit(X, X["x0"] * X["x1"] > 0)
    src = _tree_source(tmp_path, model, X)
    result = optimize_version(src, src.ref)
    assert result.adopted, result.reason


def test_categorical_splits_keep_skl2onnx_converter(tmp_path):
    """HistGradientBoosting with categorical splits is not written as TreeEnsemble: skl2onnx's
    own (float) converter takes it and parity decides, with the reason on a refusal."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(3)
    X = pd.DataFrame({"cat": rng.integers(0, 5, 800).astype(float), "x": rng.normal(size=800)})
    model = HistGradientBoostingClassifier(categorical_features=[0], max_iter=20).fit(X, (X["cat"] % 2 == 0) ^ (X["x"] > 0))
    src = _tree_source(tmp_path, model, X)
    result = optimize_version(src, src.ref)
    assert result.adopted or src.tags[ONNX_REFUSED_TAG] == result.reason


def test_optimize_quietly_never_raises(tmp_path, trained):
    from loopml.errors import RegistryUnavailable
    from loopml.registry.optimize import optimize_quietly

    class Down(FolderSource):
        def set_version_tags(self, ref, tags):
            raise RegistryUnavailable("http://127.0.0.1:1", "connection refused")

    src = Down(tmp_path, trained["clf"], NUM_SIG)
    said = []
    assert optimize_quietly(src, src.ref, lambda step, msg: said.append(msg)) is None
    assert "serving stays native" in said[-1] and "RegistryUnavailable" in said[-1]


@pytest.mark.parametrize("setting", ["auto", "off", "quantize"])
def test_run_optimizes_unless_serving_onnx_is_off(project, workspace, setting):
    from loopml.loop.pipeline import run_pipeline
    from loopml.registry.client import Registry
    from loopml.spec import load_spec

    spec = load_spec(project)
    serving = {"onnx": "auto", "onnx_quantize": True} if setting == "quantize" else {"onnx": setting}
    spec = spec.model_copy(update={"serving": spec.serving.model_copy(update=serving)})
    steps = []
    result = run_pipeline(spec, workspace, project_dir=project, on_step=lambda s, m: steps.append(m))
    tags = Registry(workspace).resolve(spec.name, result.version).tags
    if setting == "auto":
        assert tags[RUNTIME_TAG] == "onnx" and any("ONNX adopted" in m for m in steps)
    elif setting == "quantize":  # the demo's trees have nothing INT8 takes: said, and FP32 kept
        assert tags[RUNTIME_TAG] == "onnx" and tags["loopml.onnx_precision"] == "fp32"
        assert any("ONNX adopted" in m and "INT8 refused: nothing in this graph quantizes" in m for m in steps), steps
    else:
        assert RUNTIME_TAG not in tags and not any("ONNX" in m for m in steps)
