"""``compute_drift``: compare a window of traffic with the training reference profile.

Automatic method choice, per column (override per feature in the spec, see
:class:`FeatureSettings`):

1. The column is absent from the window: status ``schema changed: column X missing``.
   A numeric reference column whose current values are mostly not numbers: status
   ``schema changed: X was numeric, now text``.
2. No non-missing value in the window: ``all missing in current window``; fewer than
   :data:`MIN_ROWS` (30): ``insufficient data``; a reference with no value:
   ``no reference data``. None of these is a verdict: ``drifted`` is False, the statistic
   ``None``, and the report lists them in ``problems``.
3. Numeric, at most :data:`TEST_MAX_ROWS` (5,000) current values: two-sample KS (exact
   where scipy is exact). More values than that: PSI on the reference's quantile bins,
   because at such sizes a test flags shifts far too small to matter.
   (Without stored reference values, PSI at any size.)
4. Categorical with more than :data:`HIGH_CARDINALITY` (100) categories: Jensen-Shannon
   distance. Otherwise at most 5,000 values: chi-squared homogeneity test; more: PSI.
   Integers that are class labels (a binary 0/1 column, or one named in ``classes``: a
   classifier's target and predictions, contract columns with ``allowed`` values) are
   categorical too, whatever dtype the reference profile recorded (:mod:`loopml.monitor.classes`).

Thresholds: tests are judged together, Benjamini-Hochberg at ``settings.fdr`` (a column
drifts when its adjusted p-value is at most the FDR level); PSI against
``settings.psi_threshold`` (0.2); normalized Wasserstein and Jensen-Shannon against 0.1.

Dataset verdict: drifted when the Benjamini-Hochberg procedure rejects at least one of
the tested columns, or an effect-size column is over its threshold. ``report.rule`` says
which rule decided and how many columns it flagged; a share of drifted columns is
reported but never decides.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from loopml.errors import SpecError
from loopml.monitor.classes import as_categorical, class_labels, is_auto_class
from loopml.monitor.columns import split_log_columns
from loopml.monitor.result import OK, DriftReport, FeatureDrift
from loopml.monitor.stats import (
    benjamini_hochberg, chi2_homogeneity, js_distance, ks_2samp_sorted, numeric_bin_counts,
    psi, wasserstein_sorted,
)
from loopml.spec import FeatureMonitorSpec

if TYPE_CHECKING:
    from loopml.data.profile import ColumnProfile, ReferenceProfile
    from loopml.spec import MonitoringSpec

MIN_ROWS = 30
TEST_MAX_ROWS = 5_000
HIGH_CARDINALITY = 100
DISTANCE_THRESHOLD = 0.1
MAX_UNSEEN_REPORTED = 20
TESTS = ("ks", "chi2")
NUMERIC_METHODS = ("ks", "psi", "wasserstein", "jensenshannon")
CATEGORICAL_METHODS = ("chi2", "psi", "jensenshannon")


# Per-feature settings are the spec's own typed model, validated when loopml.yaml is loaded.
FeatureSettings = FeatureMonitorSpec


def feature_settings(settings: "MonitoringSpec | None", name: str) -> FeatureSettings:
    raw = (settings.features.get(name) if settings is not None else None) or {}
    try:
        return FeatureSettings.model_validate(raw)
    except ValidationError as exc:
        problems = [f"monitoring.features.{name}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise SpecError("loopml.yaml", problems) from None


def compute_drift(reference: "ReferenceProfile", current: pd.DataFrame, *,
                  settings: "MonitoringSpec | None" = None, features: list[str] | None = None,
                  role: str = "input", rename: dict[str, str] | None = None,
                  classes: Collection[str] = (), extra: Collection[FeatureDrift] = ()) -> DriftReport:
    """Drift of ``current`` against ``reference``, per column and for the dataset.

    ``current`` may be a prediction-log window (``in.<feature>`` columns, the prefix is
    stripped) or a plain table. ``features`` defaults to every reference column present
    in the window; columns named explicitly but absent are reported as schema changes.
    ``rename`` maps a current column name to the reference column it is compared with.
    ``classes`` names reference columns whose numbers are class labels (see
    :mod:`loopml.monitor.classes`): they are checked as categorical, as is any binary
    integer column. ``extra`` holds verdicts made elsewhere (vector columns, see
    :mod:`loopml.monitor.vectors`) that count in the dataset verdict as effect sizes.
    """
    from loopml.spec import MonitoringSpec

    settings = settings or MonitoringSpec()
    columns = split_log_columns(current, role=role)
    for cur_name, ref_name in (rename or {}).items():
        if cur_name in columns:
            columns[ref_name] = columns.pop(cur_name)
    ref_cols = reference.columns
    if features is None:
        names = [c for c in ref_cols if c in columns]
        missing = [c for c in ref_cols if c not in columns]
    else:
        names, missing = list(features), []
    new_columns = sorted(c for c in columns if c not in ref_cols) if role == "input" else []
    results: list[FeatureDrift] = []
    for name in names:
        fs = feature_settings(settings, name)
        if fs.skip:
            continue
        prof, ref_sorted, series = ref_cols.get(name), reference.sorted_values.get(name), columns.get(name)
        if prof is not None and (name in classes or is_auto_class(prof, ref_sorted)):
            cat = as_categorical(prof, ref_sorted)
            if cat is not None:  # class labels: counted per class, never KS-tested as numbers
                prof, ref_sorted = cat, None
                series = class_labels(series) if series is not None else None
        results.append(_check_column(name, prof, ref_sorted, series, fs, settings, role))
    results.extend(extra)
    return _verdict(results, settings.fdr, reference.row_count, len(current), missing, new_columns)


def _unchecked(name: str, kind: str, status: str, role: str, n_ref: int = 0, n_cur: int = 0,
               missing_rate: float | None = None) -> FeatureDrift:
    return FeatureDrift(name=name, kind=kind, method="none", statistic=None, p_value=None,
                        threshold=None, drifted=False, status=status, role=role,
                        n_reference=n_ref, n_current=n_cur, missing_rate=missing_rate)


def _check_column(name: str, prof: "ColumnProfile | None", ref_sorted: np.ndarray | None,
                  series: pd.Series | None, fs: FeatureSettings, settings: "MonitoringSpec",
                  role: str) -> FeatureDrift:
    if prof is None:
        return _unchecked(name, "unknown", f"schema changed: column {name} not in the reference", role)
    if series is None:
        return _unchecked(name, prof.kind, f"schema changed: column {name} missing", role)
    if prof.kind == "numeric":
        return _check_numeric(name, prof, ref_sorted, series, fs, settings, role)
    return _check_categorical(name, prof, series, fs, settings, role)


def _numeric_values(series: pd.Series) -> tuple[np.ndarray, int]:
    """Float values (NaN for missing) and how many present values were not numbers."""
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan), 0
    coerced = pd.to_numeric(series, errors="coerce")
    bad = int(coerced.isna().sum() - series.isna().sum())
    return coerced.to_numpy(dtype=np.float64, na_value=np.nan), bad


def _check_numeric(name, prof, ref_sorted, series, fs, settings, role) -> FeatureDrift:
    values, bad = _numeric_values(series)
    n_total = values.size
    present = values[~np.isnan(values)]
    missing_rate = 1.0 - present.size / n_total if n_total else None
    if bad and bad > present.size:
        return _unchecked(name, "numeric", f"schema changed: {name} was numeric, now text", role,
                          prof.count - prof.missing, n_total, missing_rate)
    base = dict(n_ref=prof.count - prof.missing, n_cur=int(present.size), missing_rate=missing_rate)
    status = _data_status(name, n_total, present.size, base["n_ref"], fs.min_rows)
    if status != OK or not prof.bin_counts:
        return _unchecked(name, "numeric", status if status != OK else "no reference data", role,
                          base["n_ref"], base["n_cur"], missing_rate)
    cur = np.sort(present)
    have_values = ref_sorted is not None and ref_sorted.size > 0
    method = fs.method
    if method == "auto":
        method = "ks" if have_values and cur.size <= TEST_MAX_ROWS else "psi"
    if method not in NUMERIC_METHODS:
        raise SpecError("loopml.yaml", f"monitoring.features.{name}.method: '{method}' does not apply to a numeric column; use one of {', '.join(NUMERIC_METHODS)}")
    if method in ("ks", "wasserstein") and not have_values:
        method = "psi"  # the profile was saved without its sorted values
    ref_counts, cur_counts = numeric_bin_counts(prof.bin_edges, prof.bin_counts, prof.min, prof.max, cur)
    scores = {"psi": psi(ref_counts, cur_counts), "jensenshannon": js_distance(ref_counts, cur_counts)}
    p_value = None
    if method == "ks" or (have_values and cur.size <= TEST_MAX_ROWS):
        scores["ks"], p_value = ks_2samp_sorted(ref_sorted, cur)
    if method == "wasserstein" or (have_values and cur.size <= TEST_MAX_ROWS):
        scale = prof.std if prof.std else 1.0  # a constant reference: the raw distance
        scores["wasserstein"] = wasserstein_sorted(ref_sorted, cur) / scale
    threshold = _threshold(method, fs, settings)
    stat = scores[method]
    return FeatureDrift(
        name=name, kind="numeric", method=method, statistic=stat,
        p_value=p_value, threshold=threshold,
        drifted=bool(method not in TESTS and stat >= threshold), role=role,
        n_reference=base["n_ref"], n_current=base["n_cur"], missing_rate=missing_rate,
        reference_missing_rate=prof.missing_rate, scores=scores,
        bins=_numeric_bin_labels(prof), reference_counts=ref_counts.tolist(),
        current_counts=cur_counts.tolist(),
    )


def _check_categorical(name, prof, series, fs, settings, role) -> FeatureDrift:
    n_total = len(series)
    counts = series.value_counts(dropna=True)
    n_present = int(counts.sum())
    missing_rate = 1.0 - n_present / n_total if n_total else None
    ref_freq = prof.frequencies
    n_ref = prof.count - prof.missing
    status = _data_status(name, n_total, n_present, n_ref, fs.min_rows)
    if status != OK:
        return _unchecked(name, "categorical", status, role, n_ref, n_present, missing_rate)
    cur_freq: dict[str, int] = {}
    for k, v in zip(counts.index, counts.to_numpy()):
        key = str(k)
        if key not in ref_freq and "__other__" in ref_freq:
            key = "__other__"  # the reference folded its rarest categories here
        cur_freq[key] = cur_freq.get(key, 0) + int(v)
    unseen = {k: v for k, v in sorted(cur_freq.items(), key=lambda kv: -kv[1]) if k not in ref_freq}
    labels = list(ref_freq) + list(unseen)
    ref_counts = np.array([ref_freq.get(k, 0) for k in labels], dtype=np.int64)
    cur_counts = np.array([cur_freq.get(k, 0) for k in labels], dtype=np.int64)
    method = fs.method
    if method == "auto":
        if len(labels) > HIGH_CARDINALITY:
            method = "jensenshannon"
        else:
            method = "chi2" if n_present <= TEST_MAX_ROWS else "psi"
    if method not in CATEGORICAL_METHODS:
        raise SpecError("loopml.yaml", f"monitoring.features.{name}.method: '{method}' does not apply to a categorical column; use one of {', '.join(CATEGORICAL_METHODS)}")
    chi2, p_value, _ = chi2_homogeneity(ref_counts, cur_counts)
    scores = {"chi2": chi2, "psi": psi(ref_counts, cur_counts), "jensenshannon": js_distance(ref_counts, cur_counts)}
    threshold = _threshold(method, fs, settings)
    stat = scores[method]
    return FeatureDrift(
        name=name, kind="categorical", method=method, statistic=stat, p_value=p_value,
        threshold=threshold, drifted=bool(method not in TESTS and stat >= threshold), role=role,
        n_reference=n_ref, n_current=n_present, missing_rate=missing_rate,
        reference_missing_rate=prof.missing_rate, scores=scores,
        unseen=dict(list(unseen.items())[:MAX_UNSEEN_REPORTED]),
        bins=labels, reference_counts=ref_counts.tolist(), current_counts=cur_counts.tolist(),
    )


def _data_status(name: str, n_total: int, n_present: int, n_ref: int, min_rows: int) -> str:
    if n_ref == 0:
        return "no reference data"
    if n_total == 0:
        return "insufficient data: empty window"
    if n_present == 0:
        return "all missing in current window"
    if n_present < min_rows:
        return f"insufficient data: {n_present} values, need {min_rows}"
    return OK


def _threshold(method: str, fs: FeatureSettings, settings: "MonitoringSpec") -> float:
    if method in TESTS:
        return settings.fdr
    if fs.threshold is not None:
        return fs.threshold
    return settings.psi_threshold if method == "psi" else DISTANCE_THRESHOLD


def _numeric_bin_labels(prof: "ColumnProfile") -> list[str]:
    e = [prof.min, *prof.bin_edges, prof.max]
    inner = [f"({a:.4g}, {b:.4g}]" for a, b in zip(e[:-1], e[1:])]
    inner[0] = f"[{e[0]:.4g}, {e[1]:.4g}]"
    return [f"< {prof.min:.4g}", *inner, f"> {prof.max:.4g}"]


def _verdict(results: list[FeatureDrift], fdr: float, n_ref: int, n_cur: int,
             missing: list[str], new_columns: list[str]) -> DriftReport:
    tested = [f for f in results if f.tested]
    if tested:
        q = benjamini_hochberg([f.p_value for f in tested])
        for f, qv in zip(tested, q):
            f.q_value = float(qv)
            f.drifted = bool(qv <= fdr)
    effect = [f for f in results if f.ok and f.method not in TESTS]
    n_rejected = sum(f.drifted for f in tested)
    n_effect = sum(f.drifted for f in effect)
    parts = []
    if tested:
        parts.append(f"Benjamini-Hochberg at FDR {fdr:g}: {n_rejected} of {len(tested)} tested columns rejected")
    if effect:
        parts.append(f"effect size: {n_effect} of {len(effect)} columns over threshold")
    if not parts:
        parts.append("no column could be checked")
    decided = {(True, True): "both", (True, False): "benjamini-hochberg",
               (False, True): "effect size", (False, False): "none"}[(n_rejected > 0, n_effect > 0)]
    return DriftReport(features=results, drifted=n_rejected + n_effect > 0, rule="; ".join(parts),
                       decided_by=decided, fdr=fdr, n_reference=n_ref, n_current=n_cur,
                       missing_columns=missing, new_columns=new_columns)


def report_window(report: DriftReport, **window: Any) -> DriftReport:
    """Attach window metadata (start, end, rows, ...) to a report and return it."""
    report.window.update({k: v for k, v in window.items() if v is not None})
    return report
