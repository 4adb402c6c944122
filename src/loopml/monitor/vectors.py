"""Text and embedding columns of the prediction log: what drift means for them.

A text model's log holds free text in (``in.text``) and a vector per row out
(``out.prediction``: a 384-float embedding for all-MiniLM-L6-v2). Neither can be compared as
a category or a number: nearly every sentence is "unseen", and a vector has no order.

- **Free text** becomes two numbers per row, compared like any numeric column (KS, PSI):
  ``<name>.chars`` (length in characters) and ``<name>.words`` (whitespace-separated words).
  A string column is free text when most of its values are distinct and they average at
  least :data:`TEXT_MIN_WORDS` words; a low-cardinality string column stays categorical.
- **Vectors** (list or array values of one length >= 2) are compared as a whole with a
  domain classifier, the method Evidently uses by default for embeddings: a logistic
  regression learns to tell reference rows from current rows, scored by its out-of-fold
  ROC AUC (5-fold). AUC 0.5 means the windows cannot be told apart. The column drifts when
  the AUC is at least the threshold (:data:`AUC_THRESHOLD`, 0.55 as in Evidently) *and*
  the AUC is significant (one-sided p <= the report's FDR level, from the Mann-Whitney null
  of the AUC: mean 0.5, variance (n1 + n2 + 1) / (12 n1 n2)); the second condition keeps
  small windows from drifting by chance, the first keeps huge ones from drifting on a
  difference too small to matter. The cosine distance between the two mean vectors is
  reported beside it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from loopml.monitor.predlog import IN_PREFIX, META_COLUMNS, OUT_PREFIX
from loopml.monitor.result import OK, FeatureDrift

TEXT_MIN_WORDS = 3.0
TEXT_MIN_DISTINCT = 0.5
AUC_THRESHOLD = 0.55
MAX_ROWS = 1_000  # per window for the classifier: beyond this the AUC barely moves, the cost does
FOLDS = 5


def _values(series: pd.Series) -> list:
    return [v for v in series.tolist() if v is not None and not (isinstance(v, float) and math.isnan(v))]


def is_vector_column(series: pd.Series) -> bool:
    """True when every present value is a list/array of one length >= 2."""
    vals = _values(series)
    if not vals or not all(isinstance(v, (list, tuple, np.ndarray)) for v in vals[:50]):
        return False
    dims = {len(v) for v in vals}
    return len(dims) == 1 and dims.pop() >= 2


def is_text_column(series: pd.Series) -> bool:
    """Free text: strings, mostly distinct, averaging :data:`TEXT_MIN_WORDS` words or more."""
    vals = _values(series)
    if not vals or not all(isinstance(v, str) for v in vals):
        return False
    words = np.fromiter((len(v.split()) for v in vals), dtype=np.float64, count=len(vals))
    return len(set(vals)) / len(vals) >= TEXT_MIN_DISTINCT and float(words.mean()) >= TEXT_MIN_WORDS


def text_features(series: pd.Series, name: str) -> dict[str, pd.Series]:
    """``name.chars`` and ``name.words`` per row (missing stays missing)."""
    text = series.where(series.map(lambda v: isinstance(v, str)))
    return {f"{name}.chars": text.str.len().astype("float64"),
            f"{name}.words": text.str.split().str.len().astype("float64")}


def vector_matrix(series: pd.Series) -> np.ndarray:
    """The present vectors of a column as one float matrix (rows x dimensions)."""
    vals = _values(series)
    return np.asarray(vals, dtype=np.float64).reshape(len(vals), -1) if vals else np.empty((0, 0))


def split_columns(df: pd.DataFrame, kinds: dict[str, str] | None = None) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, str]]:
    """``(scalar frame, vectors, kinds)`` of a log window: free-text columns replaced by their
    numbers, vector columns taken out. ``kinds`` (column -> "text" | "vector") decided on the
    reference is passed for the current window, so both are read the same way."""
    kinds = dict(kinds) if kinds is not None else {
        str(c): k for c in df.columns if str(c) not in META_COLUMNS
        for k in [("vector" if is_vector_column(df[c]) else "text" if is_text_column(df[c]) else None)] if k}
    scalars: dict[str, pd.Series] = {}
    vectors: dict[str, np.ndarray] = {}
    for c in df.columns:
        name, kind = str(c), kinds.get(str(c))
        if kind == "vector":
            vectors[name] = vector_matrix(df[c])
        elif kind == "text":
            scalars.update(text_features(df[c], name))
        else:
            scalars[name] = df[c]
    return pd.DataFrame(scalars, index=df.index), vectors, kinds


def _auc_p_value(auc: float, n1: int, n2: int) -> float:
    sd = math.sqrt((n1 + n2 + 1) / (12.0 * n1 * n2))
    return 0.5 * math.erfc((auc - 0.5) / sd / math.sqrt(2.0))


def _sample(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= MAX_ROWS else x[rng.choice(len(x), MAX_ROWS, replace=False)]


def classifier_auc(ref: np.ndarray, cur: np.ndarray, seed: int = 0) -> float:
    """Out-of-fold ROC AUC of a logistic regression telling ``cur`` rows from ``ref`` rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.vstack([ref, cur])
    y = np.r_[np.zeros(len(ref)), np.ones(len(cur))]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500))
    folds = StratifiedKFold(n_splits=min(FOLDS, len(ref), len(cur)), shuffle=True, random_state=seed)
    proba = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, proba))


def _cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(1.0 - a @ b / (na * nb)) if na and nb else 0.0


def vector_drift(name: str, ref: np.ndarray, cur: np.ndarray, *, role: str, fdr: float,
                 threshold: float = AUC_THRESHOLD, min_rows: int = 30, seed: int = 0) -> FeatureDrift:
    """The drift verdict of one vector column (see the module docstring)."""
    n_ref, n_cur = len(ref), len(cur)
    base = dict(name=name, kind="vector", role=role, n_reference=n_ref, n_current=n_cur)
    status = OK
    if n_ref == 0:
        status = "no reference data"
    elif n_cur < min_rows or n_ref < min_rows:
        status = f"insufficient data: {min(n_ref, n_cur)} vectors, need {min_rows}"
    elif ref.shape[1] != cur.shape[1]:
        status = f"schema changed: {name} had {ref.shape[1]} dimensions, now {cur.shape[1]}"
    if status != OK:
        return FeatureDrift(method="none", statistic=None, p_value=None, threshold=None, drifted=False,
                            status=status, **base)
    rng = np.random.default_rng(seed)
    r, c = _sample(ref, rng), _sample(cur, rng)
    auc = classifier_auc(r, c, seed)
    p = _auc_p_value(auc, len(r), len(c))
    scores = {"model": auc, "mean_cosine_distance": _cosine_distance(ref.mean(0), cur.mean(0))}
    return FeatureDrift(method="model", statistic=auc, p_value=p, threshold=threshold,
                        drifted=bool(auc >= threshold and p <= fdr), scores=scores, **base)


def role_of(column: str) -> str:
    return "output" if column.startswith(OUT_PREFIX) else "input"


def plain_name(column: str) -> str:
    return column[len(IN_PREFIX):] if column.startswith(IN_PREFIX) else column
