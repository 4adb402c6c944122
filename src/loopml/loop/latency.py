"""A quick offline latency benchmark for the gate: single-row predict p99 of a model."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from loopml.spec import ProjectSpec


def single_row_p99_ms(model, spec: ProjectSpec, frame: pd.DataFrame, calls: int = 200) -> float:
    """p99 in ms of ``calls`` single-row predictions on rows of ``frame`` (after 10 warm-up calls)."""
    from loopml.train.trainer import coerce_features, feature_kinds

    features = list(getattr(model, "feature_names_in_", spec.feature_columns(list(frame.columns))))
    numeric, categorical = feature_kinds(frame, features)
    rows = coerce_features(frame[features].head(max(calls, 10)), numeric, categorical)
    singles = [rows.iloc[[i % len(rows)]] for i in range(calls + 10)]
    times = []
    for i, row in enumerate(singles):
        t0 = time.perf_counter()
        model.predict(row)
        if i >= 10:
            times.append((time.perf_counter() - t0) * 1000.0)
    return float(np.percentile(times, 99))
