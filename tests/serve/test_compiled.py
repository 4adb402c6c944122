"""Compiled linear pipelines: same answers as scikit-learn, adopted only when they are."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, PolynomialFeatures, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from loopml.errors import InvalidInput
from loopml.serve.compiled import compile_pipeline, sklearn_predict
from loopml.serve.runtime import ModelRuntime, Rows
from tests.serve.conftest import FEATURES, MIXED_SIG, NUM_SIG, FakeRegistry, clf_model, mixed_model, reg_model

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fit_pipeline(seed: int, k: int, head: list[str], final: str, n_classes: int):
    rng = np.random.default_rng(seed)
    n = 120
    X = rng.normal(loc=rng.normal(scale=5, size=k), scale=rng.uniform(0.1, 10, size=k), size=(n, k))
    z = (X - X.mean(0)) / X.std(0) @ rng.normal(size=k)
    steps = []
    for i, name in enumerate(head):
        if name.startswith("impute"):
            steps.append((f"s{i}", SimpleImputer(strategy=name.split(":")[1], fill_value=1.5)))
        else:
            steps.append((f"s{i}", StandardScaler(with_mean=name != "scale:nomean", with_std=name != "scale:nostd")))
    if any(name.startswith("impute") for name in head):
        X[rng.random((n, k)) < 0.1] = np.nan
    if final == "logistic":
        cuts = np.quantile(z, np.linspace(0, 1, n_classes + 1)[1:-1])
        y = np.array(["a", "b", "c", "d"])[np.searchsorted(cuts, z)]
        est = LogisticRegression(C=float(rng.uniform(0.01, 10)), max_iter=200)
    else:
        y = z + rng.normal(size=n)
        est = LinearRegression() if final == "linear" else Ridge(alpha=float(rng.uniform(0.1, 10)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Pipeline(steps + [("est", est)]).fit(X, y) if steps else est.fit(X, y)
    transformers = [t for _, t in model.steps[:-1]] if steps else []
    return transformers, (model[-1] if steps else model)


head_step = st.sampled_from(["scale", "scale:nomean", "scale:nostd", "impute:mean", "impute:median",
                             "impute:most_frequent", "impute:constant"])
pipelines = st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 8), st.lists(head_step, max_size=3),
                      st.sampled_from(["logistic", "linear", "ridge"]), st.integers(2, 4))


def assert_same(want, got):
    assert got.predict.shape == want.predict.shape
    if want.proba is None:
        assert got.proba is None
        np.testing.assert_allclose(got.predict, want.predict, rtol=1e-12, atol=1e-12)
    else:
        np.testing.assert_array_equal(got.predict, want.predict)
        assert got.proba.shape == want.proba.shape
        np.testing.assert_allclose(got.proba, want.proba, rtol=0, atol=1e-12)


@SETTINGS
@given(pipelines, st.data())
def test_compiled_equals_sklearn_on_random_pipelines_and_inputs(spec, data):
    seed, k, head, final, n_classes = spec
    transformers, est = fit_pipeline(seed, k, head, final, n_classes)
    compiled = compile_pipeline(transformers, est, k)
    assert compiled is not None, (head, final)
    values = st.floats(min_value=-1e6, max_value=1e6)
    if any(h.startswith("impute") for h in head):
        values = values | st.just(np.nan)
    n = data.draw(st.integers(1, 40))
    X = data.draw(arrays(np.float64, (n, k), elements=values))
    if data.draw(st.booleans()):
        X = np.ascontiguousarray(X.T).T  # the runtime's layout (a transposed (k, n) array)
    try:
        want = sklearn_predict(transformers, est, X)
    except ValueError:
        with pytest.raises(ValueError):
            compiled.predict(X)
        return
    assert_same(want, compiled.predict(X))


@pytest.mark.parametrize("final", ["logistic", "linear", "ridge"])
def test_non_finite_input_is_rejected_like_sklearn(final):
    transformers, est = fit_pipeline(3, 5, ["scale"], final, 3)
    compiled = compile_pipeline(transformers, est, 5)
    for bad in (np.nan, np.inf, -np.inf):
        X = np.zeros((3, 5))
        X[1, 2] = bad
        with pytest.raises(ValueError):
            sklearn_predict(transformers, est, X)
        with pytest.raises(ValueError, match="Input X contains"):
            compiled.predict(X)


def test_imputer_fills_missing_values_like_sklearn():
    transformers, est = fit_pipeline(4, 6, ["impute:median", "scale"], "logistic", 2)
    compiled = compile_pipeline(transformers, est, 6)
    X = np.random.default_rng(0).normal(size=(10, 6))
    X[::2, 1] = np.nan
    X[3] = np.nan
    assert_same(sklearn_predict(transformers, est, X), compiled.predict(X))


def _unsupported():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(100, 4))
    y = (X[:, 0] > 0).astype(int)
    yield [MinMaxScaler().fit(X)], LogisticRegression().fit(X, y)
    poly = PolynomialFeatures(2).fit(X)
    yield [poly], LogisticRegression().fit(poly.transform(X), y)
    yield [StandardScaler().fit(X)], DecisionTreeClassifier().fit(X, y)
    imp = SimpleImputer(add_indicator=True).fit(np.where(X > 1.5, np.nan, X))
    yield [imp], LogisticRegression().fit(imp.transform(X), y)
    imp = SimpleImputer(missing_values=0.0).fit(X)
    yield [imp], LinearRegression().fit(X, y)
    yield [], LogisticRegression().fit(X[:, :3], y)  # width differs from the runtime's matrix


@pytest.mark.parametrize("case", list(_unsupported()), ids=["minmax", "poly", "tree", "indicator", "zero-missing",
                                                            "width"])
def test_unsupported_pipelines_are_not_compiled(case):
    transformers, est = case
    assert compile_pipeline(transformers, est, 4) is None


def test_mismatch_on_probe_rows_keeps_the_sklearn_path():
    transformers, est = fit_pipeline(6, 4, ["scale"], "logistic", 2)

    class Lying(LogisticRegression):  # same name, different answers: must not be compiled
        def predict_proba(self, X):
            return 1 - super().predict_proba(X)

    Lying.__name__ = "LogisticRegression"
    liar = Lying()
    liar.__dict__.update(est.__dict__)
    assert compile_pipeline(transformers, est, 4) is not None
    assert compile_pipeline(transformers, liar, 4) is None


def _runtime(model, sig, **kw):
    reg = FakeRegistry()
    reg.add("m", model, sig, "champion")
    return ModelRuntime(reg, reg.resolve("m"), **kw).load()


def test_runtime_adopts_compiled_path_for_linear_models_only():
    assert _runtime(clf_model(), NUM_SIG).compiled is not None
    assert _runtime(reg_model(), NUM_SIG).compiled is not None
    assert _runtime(mixed_model(), MIXED_SIG).compiled is None
    assert _runtime(clf_model(), NUM_SIG, use_compiled=False).compiled is None


@SETTINGS
@given(st.lists(st.lists(st.floats(-1e6, 1e6), min_size=4, max_size=4), min_size=1, max_size=20))
def test_runtime_answers_are_unchanged_by_compilation(rows):
    fast, slow = RUNTIMES
    r = Rows({f: [row[j] for row in rows] for j, f in enumerate(FEATURES)}, len(rows))
    a, b = fast.predict_sync(r), slow.predict_sync(r)
    np.testing.assert_array_equal(a.predict, b.predict)
    np.testing.assert_allclose(a.proba, b.proba, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(a.inputs, b.inputs)


def test_runtime_rejects_non_finite_values_as_invalid_input():
    fast = RUNTIMES[0]
    with pytest.raises(InvalidInput, match="rejected the input"):
        fast.predict_sync(Rows({f: ["nan" if f == "f1" else 1.0] for f in FEATURES}, 1))


RUNTIMES = (_runtime(clf_model(), NUM_SIG), _runtime(clf_model(), NUM_SIG, use_compiled=False))


def test_environment_switch_turns_the_compiled_path_off(monkeypatch):
    from loopml.serve.settings import ServeSettings

    monkeypatch.setenv("LOOPML_SERVE_COMPILED", "0")
    off = ServeSettings.from_env()
    assert off.compiled is False
    assert _runtime(clf_model(), NUM_SIG, use_compiled=off.compiled).compiled is None
    monkeypatch.setenv("LOOPML_SERVE_COMPILED", "1")
    on = ServeSettings.from_env()
    assert on.compiled is True and _runtime(clf_model(), NUM_SIG, use_compiled=on.compiled).compiled is not None
