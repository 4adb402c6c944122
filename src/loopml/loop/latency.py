"""A quick offline latency benchmark for the gate: single-row predict p99 of a model.

Challenger and champion are timed interleaved, call by call, on the same rows, with BLAS and
OpenMP pools limited to one thread (as the server runs them), so a busy machine slows both
alike. The verdict: the challenger's p99 must fit the budget; when even the champion misses
the budget (the machine is loaded), the challenger may not be slower than the champion's p99
times ``max_p99_ratio``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from loopml.spec import ProjectSpec


def single_row_p99_ms(model: Any, spec: ProjectSpec, frame: pd.DataFrame, calls: int = 200,
                      against: Any = None) -> tuple[float, float | None]:
    """(p99 of ``model``, p99 of ``against`` or None) in ms over ``calls`` single-row predictions."""
    from threadpoolctl import threadpool_limits

    from loopml.train.trainer import coerce_features, feature_kinds

    features = list(getattr(model, "feature_names_in_", spec.feature_columns(list(frame.columns))))
    numeric, categorical = feature_kinds(frame, features)
    rows = coerce_features(frame[features].head(max(calls, 10)), numeric, categorical)
    singles = [rows.iloc[[i % len(rows)]] for i in range(calls + 10)]
    mine: list[float] = []
    theirs: list[float] = []
    with threadpool_limits(1):
        for i, row in enumerate(singles):
            for m, out in ((model, mine), (against, theirs)):
                if m is None:
                    continue
                t0 = time.perf_counter()
                m.predict(row)
                if i >= 10:
                    out.append((time.perf_counter() - t0) * 1000.0)
    return float(np.percentile(mine, 99)), (float(np.percentile(theirs, 99)) if theirs else None)


def latency_verdict(p99: float, champion_p99: float | None, budget_ms: float, max_ratio: float) -> tuple[bool, str]:
    if p99 <= budget_ms:
        return True, f"latency: single-row predict p99 {p99:.2f} ms within budget {budget_ms} ms"
    if champion_p99 is not None and champion_p99 > budget_ms:
        ok = p99 <= champion_p99 * max_ratio
        return ok, (f"latency: p99 {p99:.2f} ms over budget {budget_ms} ms, but the champion's is {champion_p99:.2f} ms "
                    f"on this machine now; allowed up to x{max_ratio} of it -> {'ok' if ok else 'TOO SLOW'}")
    return False, f"latency: single-row predict p99 {p99:.2f} ms over budget {budget_ms} ms -> TOO SLOW"
