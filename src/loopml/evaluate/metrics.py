"""Metrics by task, on a held-out split, and per slice."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from loopml.evaluate.names import LOWER_IS_BETTER, TASK_METRICS, higher_is_better  # noqa: F401 (re-exported)

# The names below are the spec's (loopml.evaluate.names); tests check these functions return them.
CLASSIFICATION_METRICS = TASK_METRICS["classification"]
REGRESSION_METRICS = TASK_METRICS["regression"]


def predict_with_proba(model: Any, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
    y_pred = np.asarray(model.predict(X))
    proba = model.predict_proba(X) if hasattr(model, "predict_proba") else None
    return y_pred, proba


def classification_metrics(y_true, y_pred, proba, classes) -> dict[str, float]:
    from sklearn import metrics as m

    y_true = np.asarray(y_true)
    binary = len(classes) == 2
    avg = "binary" if binary else "macro"
    pos = classes[-1] if binary else None
    kw = {"pos_label": pos} if binary else {}
    out = {
        "accuracy": float(m.accuracy_score(y_true, y_pred)),
        "precision": float(m.precision_score(y_true, y_pred, average=avg, zero_division=0, **kw)),
        "recall": float(m.recall_score(y_true, y_pred, average=avg, zero_division=0, **kw)),
        "f1": float(m.f1_score(y_true, y_pred, average=avg, zero_division=0, **kw)),
    }
    if proba is not None and len(np.unique(y_true)) > 1:
        if binary:
            out["roc_auc"] = float(m.roc_auc_score(y_true == pos, proba[:, 1]))
        else:
            out["roc_auc"] = float(m.roc_auc_score(y_true, proba, multi_class="ovr", labels=classes))
        out["log_loss"] = float(m.log_loss(y_true, proba, labels=classes))
    return out


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    from sklearn import metrics as m

    return {
        "mae": float(m.mean_absolute_error(y_true, y_pred)),
        "rmse": float(np.sqrt(m.mean_squared_error(y_true, y_pred))),
        "r2": float(m.r2_score(y_true, y_pred)) if len(y_true) > 1 else float("nan"),
    }


def task_metrics(task: str, model: Any, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    y_pred, proba = predict_with_proba(model, X)
    if task == "classification":
        return classification_metrics(y, y_pred, proba, list(model.classes_))
    return regression_metrics(y, y_pred)


def confusion(model: Any, X: pd.DataFrame, y: pd.Series) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix

    labels = list(model.classes_)
    cm = confusion_matrix(y, model.predict(X), labels=labels)
    return {"labels": [_plain(v) for v in labels], "matrix": cm.tolist()}


def slice_metrics(task: str, model: Any, X: pd.DataFrame, y: pd.Series, frame: pd.DataFrame,
                  columns: list[str], min_rows: int = 20) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics per value of each slice column (values with fewer than ``min_rows`` rows are skipped)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for col in columns:
        out[col] = {}
        for value, idx in frame.groupby(col, observed=True).groups.items():
            if len(idx) < min_rows:
                continue
            metrics = task_metrics(task, model, X.loc[idx], y.loc[idx])
            metrics["rows"] = float(len(idx))
            out[col][str(value)] = metrics
    return out


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v
