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
