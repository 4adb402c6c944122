"""Metric names per task and their direction: the one list the spec validates against and
:mod:`loopml.evaluate.metrics` computes. No heavy imports: ``loopml.spec`` reads it at load."""

from __future__ import annotations

# Every metric ``task_metrics`` can return for the task. roc_auc and log_loss need
# predict_proba (and two classes in the holdout); the gate fails when they are missing.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"),
    "regression": ("mae", "rmse", "r2"),
}
DEFAULT_PRIMARY = {"classification": "roc_auc", "regression": "rmse"}
LOWER_IS_BETTER = frozenset({"log_loss", "mae", "rmse"})


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER
