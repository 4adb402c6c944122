"""Validation-free NumPy evaluation of known simple linear pipelines.

scikit-learn checks its input on every call (dtype, finiteness, feature count, fitted
state): ~100 µs per estimator call whatever the batch size, which dominates a server that
predicts a few rows at a time. For a chain of ``SimpleImputer`` (numeric strategy, NaN as
the missing marker) and ``StandardScaler`` steps ending in ``LogisticRegression``,
``LinearRegression`` or ``Ridge``, :func:`compile_pipeline` copies the fitted arrays and
replays the same NumPy operations, in the same order and memory layout, as scikit-learn
does, on the float matrix the runtime already builds (the input is checked once, for
non-finite values, where scikit-learn's final estimator would reject them).

Nothing is trusted by construction: a compiled pipeline is returned only if, on probe rows
(random values plus edge cases: zeros, the training means, huge and tiny magnitudes,
missing values when an imputer fills them, non-finite values that must be rejected), its
labels and rejections are identical to scikit-learn's and its probabilities and values
agree to 1e-12. Anything else returns ``None`` and the caller keeps the scikit-learn path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

TOLERANCE = 1e-12

Step = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class CompiledPrediction:
    predict: np.ndarray
    proba: np.ndarray | None


class NonFiniteInput(ValueError):
    """The input holds NaN or infinity where the final estimator does not accept it."""


def _scaler_step(mean: np.ndarray | None, scale: np.ndarray | None) -> Step:
    # StandardScaler.transform: copy (keeping the memory order), subtract, divide in place
    def scale_(X: np.ndarray) -> np.ndarray:
        X = np.array(X, dtype=np.float64, copy=True)
        if mean is not None:
            X -= mean
        if scale is not None:
            X /= scale
        return X
    return scale_


def _imputer_step(statistics: np.ndarray) -> Step:
    def impute(X: np.ndarray) -> np.ndarray:
        mask = np.isnan(X)
        if mask.any():
            X = np.array(X, copy=True)
            X[mask] = np.broadcast_to(statistics, X.shape)[mask]
        return X
    return impute


def _compile_transformer(step: Any, n_features: int) -> Step | None:
    kind = type(step).__name__
    if getattr(step, "n_features_in_", None) != n_features:
        return None
    if kind == "StandardScaler":
        if getattr(step, "copy", True) is False:
            return None
        mean = np.array(step.mean_, dtype=np.float64) if step.with_mean else None
        scale = np.array(step.scale_, dtype=np.float64) if step.with_std else None
        for a in (mean, scale):
            if a is not None and (a.shape != (n_features,) or not np.all(np.isfinite(a))):
                return None
        return _scaler_step(mean, scale)
    if kind == "SimpleImputer":
        mv = step.missing_values
        if not (isinstance(mv, float) and np.isnan(mv)) or step.add_indicator:
            return None
        if step.strategy not in ("mean", "median", "most_frequent", "constant"):
            return None
        stats = np.asarray(step.statistics_)
        if stats.dtype == object:  # strategy="constant" keeps the fill value's type
            if not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                       for v in stats):
                return None
        elif stats.dtype.kind not in "fiu":
            return None
        if stats.shape != (n_features,):
            return None
        stats = stats.astype(np.float64)
        if not np.all(np.isfinite(stats)):  # empty features are dropped or kept: not handled
            return None
        return _imputer_step(stats)
    return None


class CompiledLinear:
    """A compiled pipeline: transform steps, then one linear model, as plain NumPy."""

    def __init__(self, steps: list[Step], coef: np.ndarray, intercept: Any, classes: np.ndarray | None,
                 n_features: int) -> None:
        self.steps = steps
        self.coef = coef
        # sklearn multiplies by ``coef_.T`` (a view) for 2-d coefficients; keep that layout
        self.coef_t = coef.T if coef.ndim == 2 else coef
        self.intercept = intercept
        self.n_features = n_features
        self.classes = classes

    def decision(self, X: np.ndarray) -> np.ndarray:
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X has {X.shape[-1]} features, but the model expects {self.n_features}")
        for step in self.steps:
            X = step(X)
        if not np.isfinite(X).all():
            what = "NaN" if np.isnan(X).any() else "infinity or a value too large for dtype('float64')"
            raise NonFiniteInput(f"Input X contains {what}.")
        return X @ self.coef_t + self.intercept

    def predict(self, X: np.ndarray) -> CompiledPrediction:
        scores = self.decision(X)
        if self.classes is None:
            return CompiledPrediction(scores, None)
        if scores.ndim > 1 and scores.shape[1] == 1:
            scores = scores.reshape(-1)
        if scores.ndim == 1:  # binary: sklearn's _predict_proba_lr and (scores > 0)
            from scipy.special import expit

            labels = self.classes[(scores > 0).astype(int)]
            p = expit(scores, out=scores)
            return CompiledPrediction(labels, np.stack([1 - p, p], axis=1))
        labels = self.classes[np.argmax(scores, axis=1)]
        # sklearn.utils.extmath.softmax, in place
        scores -= np.max(scores, axis=1).reshape(-1, 1)
        np.exp(scores, out=scores)
        scores /= np.sum(scores, axis=1).reshape(-1, 1)
        return CompiledPrediction(labels, scores)


def _compile_final(final: Any, n_features: int) -> tuple[np.ndarray, Any, np.ndarray | None] | None:
    kind = type(final).__name__
    if getattr(final, "n_features_in_", None) != n_features:
        return None
    coef = np.asarray(getattr(final, "coef_", None))
    if coef.dtype != np.float64 or coef.shape[-1] != n_features or coef.ndim not in (1, 2):
        return None
    intercept = final.intercept_
    intercept = np.array(intercept, copy=True) if isinstance(intercept, np.ndarray) else intercept
    if kind == "LogisticRegression":
        classes = np.array(final.classes_, copy=True)
        k = len(classes)
        if k < 2 or coef.ndim != 2 or coef.shape[0] != (1 if k == 2 else k):
            return None
        return np.array(coef, copy=True), intercept, classes
    if kind in ("LinearRegression", "Ridge"):
        return np.array(coef, copy=True), intercept, None
    return None


def compile_pipeline(transformers: list[Any], final: Any, n_features: int) -> CompiledLinear | None:
    """Compile ``transformers`` (applied in order) then ``final``, or return None.

    ``n_features`` is the width of the float matrix the caller will pass. The result is
    only returned when it matches scikit-learn on probe rows (see the module docstring).
    """
    try:
        steps = []
        for t in transformers:
            step = _compile_transformer(t, n_features)
            if step is None:
                return None
            steps.append(step)
        parts = _compile_final(final, n_features)
        if parts is None:
            return None
        compiled = CompiledLinear(steps, *parts, n_features=n_features)
    except (AttributeError, TypeError, ValueError):
        return None
    has_imputer = any(type(t).__name__ == "SimpleImputer" for t in transformers)
    return compiled if agrees_with_sklearn(compiled, transformers, final, has_imputer) else None


def sklearn_predict(transformers: list[Any], final: Any, X: np.ndarray) -> CompiledPrediction:
    """The reference: the same steps through scikit-learn's own methods."""
    for t in transformers:
        X = t.transform(X)
    proba = np.asarray(final.predict_proba(X)) if hasattr(final, "predict_proba") else None
    return CompiledPrediction(np.asarray(final.predict(X)), proba)


def probe_rows(n_features: int, means: np.ndarray | None, with_nan: bool, seed: int = 0) -> list[np.ndarray]:
    """Batches to compare on: each is an (n, k) float64 matrix in the runtime's layout."""
    rng = np.random.default_rng(seed)
    k = n_features
    rows = [rng.normal(size=(32, k)), rng.normal(scale=1e3, size=(8, k)), np.zeros((1, k)),
            np.full((1, k), 1e150), np.full((1, k), -1e150), np.full((2, k), 1e-300),
            rng.integers(-5, 5, size=(8, k)).astype(np.float64), rng.normal(size=(1, k))]
    if means is not None:
        rows.append(np.array([means]))
    if with_nan:
        x = rng.normal(size=(8, k))
        x[rng.random((8, k)) < 0.3] = np.nan
        x[0] = np.nan
        rows.append(x)
    # the runtime's matrix is a transposed (k, n) array: Fortran order
    batches = [np.ascontiguousarray(r.T).T for r in rows]
    batches.append(np.ascontiguousarray(rng.normal(size=(4, k))))
    return batches


def _invalid_rows(n_features: int, with_nan: bool) -> list[np.ndarray]:
    bad = [np.full((1, n_features), np.inf), np.full((1, n_features), 1e308)]
    x = np.zeros((2, n_features))
    x[1, -1] = -np.inf
    bad.append(x)
    if not with_nan:
        x = np.zeros((2, n_features))
        x[0, 0] = np.nan
        bad.append(x)
    return bad


def agrees_with_sklearn(compiled: CompiledLinear, transformers: list[Any], final: Any, has_imputer: bool) -> bool:
    means = next((np.asarray(t.mean_, dtype=np.float64) for t in transformers
                  if type(t).__name__ == "StandardScaler" and t.with_mean), None)
    with np.errstate(all="ignore"):
        for X in probe_rows(compiled.n_features, means, has_imputer):
            try:
                want = sklearn_predict(transformers, final, X)
            except ValueError:
                want = None
            try:
                got = compiled.predict(X)
            except ValueError:
                got = None
            if (want is None) != (got is None):
                return False
            if want is not None and not _same(want, got):
                return False
        for X in _invalid_rows(compiled.n_features, has_imputer):
            try:
                sklearn_predict(transformers, final, X)
                sk_raises = False
            except ValueError:
                sk_raises = True
            try:
                compiled.predict(X)
                ours_raise = False
            except ValueError:
                ours_raise = True
            if sk_raises != ours_raise:
                return False
    return True


def _same(want: CompiledPrediction, got: CompiledPrediction) -> bool:
    if want.predict.shape != got.predict.shape or (want.proba is None) != (got.proba is None):
        return False
    if want.proba is not None:
        if not np.array_equal(want.predict, got.predict):
            return False
        return want.proba.shape == got.proba.shape and bool(
            np.allclose(want.proba, got.proba, rtol=0, atol=TOLERANCE, equal_nan=False))
    return bool(np.allclose(want.predict, got.predict, rtol=TOLERANCE, atol=TOLERANCE, equal_nan=False))
