import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import roc_auc_score

from loopml.evaluate.metrics import confusion, slice_metrics, task_metrics


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=400), "g": rng.choice(["x", "y"], 400)})
    y = pd.Series((X["a"] + rng.normal(scale=0.5, size=400) > 0).astype(int))
    m = LogisticRegression().fit(X[["a"]], y)
    got = task_metrics("classification", m, X[["a"]], y)
    assert set(got) == {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"}
    assert abs(got["roc_auc"] - roc_auc_score(y, m.predict_proba(X[["a"]])[:, 1])) < 1e-12
    cm = confusion(m, X[["a"]], y)
    assert np.sum(cm["matrix"]) == 400 and cm["labels"] == [0, 1]
    sl = slice_metrics("classification", m, X[["a"]], y, X, ["g"])
    assert set(sl["g"]) == {"x", "y"}
    assert sum(v["rows"] for v in sl["g"].values()) == 400


def test_regression_metrics():
    X = pd.DataFrame({"a": np.arange(50, dtype=float)})
    y = pd.Series(2 * X["a"] + 1)
    m = LinearRegression().fit(X, y)
    got = task_metrics("regression", m, X, y)
    assert got["mae"] < 1e-9 and got["rmse"] < 1e-9 and abs(got["r2"] - 1) < 1e-12


def test_declared_metric_names_are_what_task_metrics_computes():
    """The spec validates metric names against loopml.evaluate.names.TASK_METRICS: it must be
    exactly what task_metrics returns, for binary, multiclass and regression models."""
    from sklearn.svm import LinearSVC

    from loopml.evaluate.names import DEFAULT_PRIMARY, LOWER_IS_BETTER, TASK_METRICS

    rng = np.random.default_rng(1)
    X = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    binary = pd.Series((X["a"] > 0).astype(int))
    multi = pd.Series(np.digitize(X["a"], [-0.5, 0.5]))
    for y in (binary, multi):
        got = task_metrics("classification", LogisticRegression().fit(X, y), X, y)
        assert tuple(got) == TASK_METRICS["classification"]
    # without predict_proba only the label metrics: a subset, never a name outside the list
    no_proba = task_metrics("classification", LinearSVC().fit(X, binary), X, binary)
    assert set(no_proba) < set(TASK_METRICS["classification"])
    target = 3 * X["a"] + rng.normal(size=300)
    got = task_metrics("regression", LinearRegression().fit(X, target), X, target)
    assert tuple(got) == TASK_METRICS["regression"]
    for task, metrics in TASK_METRICS.items():
        assert DEFAULT_PRIMARY[task] in metrics
    assert LOWER_IS_BETTER <= {m for ms in TASK_METRICS.values() for m in ms}
