"""Drift of one log window against an earlier window of the same log.

For models loopml did not train (a sentence-embedding model logged by plain MLflow, any
model registered without a loopml snapshot) there is no training reference profile; the
reference is then a window of the model's own traffic, e.g. its first day in production
(``loopml monitor drift NAME --reference-since ... --reference-until ...``). Scalar columns
are profiled from that window and checked as usual (:mod:`loopml.monitor.drift`); free text
and vector columns are read as :mod:`loopml.monitor.vectors` says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from loopml.monitor.predlog import IN_PREFIX, OUT_PREFIX
from loopml.monitor.result import DriftReport, FeatureDrift

if TYPE_CHECKING:
    from loopml.spec import MonitoringSpec


def _present(df: pd.DataFrame, prefix: str, strip: bool) -> pd.DataFrame:
    """The columns of one role with at least one value (an all-empty column, such as the
    ``out.proba`` of a model that has none, is no reference for anything)."""
    cols = [c for c in df.columns if str(c).startswith(prefix) and df[c].notna().any()]
    out = df[cols]
    return out.rename(columns=lambda c: str(c)[len(prefix):]) if strip else out


def _vector_verdicts(ref: dict[str, np.ndarray], cur: dict[str, np.ndarray],
                     settings: "MonitoringSpec") -> dict[str, list[FeatureDrift]]:
    from loopml.monitor.drift import feature_settings
    from loopml.monitor.vectors import AUC_THRESHOLD, plain_name, role_of, vector_drift

    out: dict[str, list[FeatureDrift]] = {"input": [], "output": []}
    for column, matrix in ref.items():
        if not len(matrix):
            continue
        role = role_of(column)
        name = plain_name(column)
        fs = feature_settings(settings, name)
        if fs.skip:
            continue
        current = cur.get(column, np.empty((0, matrix.shape[1])))
        out[role].append(vector_drift(name, matrix, current, role=role, fdr=settings.fdr,
                                      threshold=fs.threshold or AUC_THRESHOLD, min_rows=fs.min_rows))
    return out


def window_drift(reference: pd.DataFrame, current: pd.DataFrame,
                 settings: "MonitoringSpec | None" = None) -> DriftReport:
    """Input drift (and output drift as ``report.outputs``) of ``current`` against ``reference``,
    two windows of one prediction log."""
    from loopml.data.profile import build_profile
    from loopml.monitor.drift import compute_drift
    from loopml.monitor.vectors import split_columns
    from loopml.spec import MonitoringSpec

    settings = settings or MonitoringSpec()
    ref_scalars, ref_vectors, kinds = split_columns(reference)
    cur_scalars, cur_vectors, _ = split_columns(current, kinds)
    vectors = _vector_verdicts(ref_vectors, cur_vectors, settings)
    inputs = build_profile(_present(ref_scalars, IN_PREFIX, strip=True))
    outputs = build_profile(_present(ref_scalars, OUT_PREFIX, strip=False))
    report = compute_drift(inputs, cur_scalars, settings=settings, extra=vectors["input"])
    report.outputs = compute_drift(outputs, cur_scalars, settings=settings, role="output",
                                   extra=vectors["output"])
    report.window["reference"] = {"rows": int(len(reference)), "text": sorted(k for k, v in kinds.items() if v == "text"),
                                  "vectors": sorted(k for k, v in kinds.items() if v == "vector")}
    if "ts" in current.columns and len(current):
        report.window.update({"rows": int(len(current)), "start": str(current["ts"].min()),
                              "end": str(current["ts"].max())})
    return report
