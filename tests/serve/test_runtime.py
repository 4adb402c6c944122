"""A model runtime is checked when it loads: a smoke prediction through the serving path on
the version's input example (else a row built from its signature). A failure is an error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from loopml.errors import ModelCheckFailed
from loopml.serve.runtime import ModelRuntime
from tests.serve.conftest import NUM_SIG, FakeRegistry


def three_feature_model() -> LogisticRegression:
    """A real fitted model whose signature (four features) does not match what it was fitted on."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(100, 3))
    return LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))


def strict_category_model() -> Pipeline:
    """Rejects any category it did not see: a synthetic "" row fails, a real example passes."""
    X = pd.DataFrame({"c": ["a", "b"] * 50})
    return Pipeline([("oh", OneHotEncoder(handle_unknown="error")), ("lr", LogisticRegression())]).fit(
        X, [0, 1] * 50)


CAT_SIG = {"inputs": [{"name": "c", "type": "string"}], "outputs": []}


def test_a_version_that_cannot_predict_fails_its_check_at_load():
    reg = FakeRegistry()
    reg.add("m", three_feature_model(), NUM_SIG, "champion")
    with pytest.raises(ModelCheckFailed) as err:
        ModelRuntime(reg, reg.resolve("m")).load()
    assert "'m' version 1" in str(err.value) and "smoke prediction" in str(err.value)


def test_the_input_example_is_the_smoke_row_when_the_source_has_one():
    reg = FakeRegistry()
    reg.add("cat", strict_category_model(), CAT_SIG, "champion")
    with pytest.raises(ModelCheckFailed, match="a row built from its signature"):
        ModelRuntime(reg, reg.resolve("cat")).load()
    reg.examples[("cat", "1")] = pd.DataFrame({"c": ["a", "b"]})
    rt = ModelRuntime(reg, reg.resolve("cat")).load()
    assert rt.predict_sync(rt.smoke_rows()[0]).predict.tolist() == [0, 1]


def test_a_classifier_with_text_inputs_predicts_in_one_pass_and_agrees_with_sklearn(registered_model):
    """The demo model (HistGradientBoosting behind a ColumnTransformer with text columns) cannot
    take the float fast lane; its class must still come from the one predict_proba pass (half
    the tree work), checked on the smoke rows, and equal scikit-learn's own predict."""
    import numpy as np
    import pandas as pd

    from loopml.registry.client import Registry
    from loopml.serve.runtime import ModelRuntime, Rows

    ws, name = registered_model
    reg = Registry(ws)
    reg.delete_version_tag(reg.resolve(name), "loopml.runtime")  # `loopml run` adopted ONNX; test the sklearn runtime
    ref = reg.resolve(name)
    rt = ModelRuntime(reg, ref, predict_in_thread=False).load()
    assert rt.runtime_name == "sklearn"
    assert not rt.fast and rt.argmax_predict
    example = pd.DataFrame(reg.input_example(ref))
    native = reg.load_native(ref)
    rows = Rows({c: example[c].to_numpy() for c in rt.column_names}, len(example))
    pred = rt.predict_sync(rows)
    assert np.array_equal(pred.predict, native.predict(example[rt.column_names]))
    assert np.allclose(pred.proba, native.predict_proba(example[rt.column_names]))
