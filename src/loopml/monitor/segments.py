"""Prediction (output) drift and drift per segment, built on :func:`compute_drift`."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

import pandas as pd

from loopml.monitor.columns import split_log_columns
from loopml.monitor.drift import compute_drift
from loopml.monitor.result import DriftReport

if TYPE_CHECKING:
    from loopml.data.profile import ReferenceProfile
    from loopml.spec import MonitoringSpec

MAX_SEGMENTS = 20


def compute_prediction_drift(reference: "ReferenceProfile", current: pd.DataFrame, *,
                             target: str | None = None,
                             settings: "MonitoringSpec | None" = None,
                             classification: bool | None = None) -> DriftReport:
    """Drift of the model's outputs (``out.*`` columns of a log window).

    Each output ``out.X`` is compared with the reference column ``out.X`` when the profile
    has one (a profile of the model's own predictions on held-out data), otherwise
    ``out.prediction`` is compared with the training ``target`` column: the label
    distribution the model was trained on. Outputs with neither are skipped.

    A classifier's predictions are class labels, compared per class (chi-squared), never as
    numbers. ``classification`` says whether the model is one (the spec's task); None: it is
    when the window logs ``out.proba``.
    """
    outputs = split_log_columns(current, role="output")
    if classification is None:
        classification = "out.proba" in outputs
    rename: dict[str, str] = {}
    names: list[str] = []
    for col in outputs:
        if col in reference.columns:
            names.append(col)
        elif col == "out.prediction" and target and target in reference.columns:
            rename[col] = target
            names.append(target)
    classes = {"out.prediction", *rename.values()} if classification and "out.prediction" in outputs else set()
    report = compute_drift(reference, current, settings=settings, features=names, role="output", rename=rename,
                           classes=classes)
    for f in report.features:
        if f.name in rename.values():
            f.name = "out.prediction"  # compared with the training target
    return report


def compute_segment_drift(reference: "ReferenceProfile | Mapping[str, ReferenceProfile]",
                          current: pd.DataFrame, by: str, *,
                          settings: "MonitoringSpec | None" = None, features: list[str] | None = None,
                          max_segments: int = MAX_SEGMENTS, classes: Collection[str] = ()) -> dict[str, DriftReport]:
    """One drift report per value of column ``by`` (the ``max_segments`` most frequent).

    ``reference`` is either one profile, so each segment's traffic is compared with the
    whole training distribution, or a mapping segment value -> profile of that segment
    in the training data (a value with no profile is compared with ``"__all__"`` if given).
    The segment column itself is left out of its own reports. ``classes``: as for
    :func:`compute_drift`.
    """
    columns = split_log_columns(current)
    if by not in columns:
        from loopml.errors import MonitorError

        raise MonitorError(f"segment column '{by}' is not in the window; columns: {', '.join(sorted(columns))}")
    seg = columns[by].astype("string").fillna("<missing>")
    top = seg.value_counts().index[:max_segments]
    if features is None:
        base = reference if not isinstance(reference, Mapping) else next(iter(reference.values()))
        features = [c for c in base.columns if c in columns and c != by]
    else:
        features = [f for f in features if f != by]
    out: dict[str, DriftReport] = {}
    for value in top:
        if isinstance(reference, Mapping):
            ref = reference.get(str(value)) or reference.get("__all__")
            if ref is None:
                continue
        else:
            ref = reference
        rows = current[(seg == value).to_numpy()]
        report = compute_drift(ref, rows, settings=settings, features=features, classes=classes)
        report.window["segment"] = {by: str(value)}
        out[str(value)] = report
    return out
