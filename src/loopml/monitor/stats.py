"""Drift statistics: vectorized, and exact where the method is exact.

Every function takes plain NumPy arrays (reference side usually from a
:class:`~loopml.data.profile.ReferenceProfile`) and returns floats, so each is
tested against a direct SciPy/NumPy computation.

Numeric
    * :func:`psi` on the reference's quantile bins plus two explicit out-of-range bins
      (below the reference minimum, above its maximum); see :func:`numeric_bin_counts`.
    * :func:`ks_2samp_sorted`: two-sample Kolmogorov-Smirnov, equal to
      ``scipy.stats.ks_2samp`` (statistic and p-value, ``method="auto"``), computed from
      the profile's stored sorted reference values.
    * :func:`wasserstein_sorted`: first Wasserstein distance, equal to
      ``scipy.stats.wasserstein_distance``; :func:`drift_scores` divides it by the
      reference standard deviation so one threshold fits every scale.
    * :func:`js_distance`: Jensen-Shannon distance (base 2, so in [0, 1]) between binned
      distributions, equal to ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.
Categorical
    * :func:`chi2_homogeneity` (2 x K contingency table, no continuity correction, equal to
      ``scipy.stats.chi2_contingency(table, correction=False)``), :func:`psi`, :func:`js_distance`.
Across features
    * :func:`benjamini_hochberg`: adjusted p-values, equal to
      ``scipy.stats.false_discovery_control(p, method="bh")``.

PSI epsilon: a bin with no observations would make the log ratio infinite, so each
side's proportion is floored at :data:`PSI_EPSILON` (1e-4) before the sum
``sum((q - p) * ln(q / p))``; the floored proportions are not renormalized. A bin empty on
both sides therefore contributes exactly 0.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

PSI_EPSILON = 1e-4
KS_EXACT_MAX_N = 10_000  # scipy's method="auto" computes the exact p-value up to this size


def psi(ref_counts: np.ndarray, cur_counts: np.ndarray, eps: float = PSI_EPSILON) -> float:
    """Population stability index between two count vectors over the same bins."""
    r = np.asarray(ref_counts, dtype=np.float64)
    c = np.asarray(cur_counts, dtype=np.float64)
    p = np.maximum(r / max(r.sum(), 1.0), eps)
    q = np.maximum(c / max(c.sum(), 1.0), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two count vectors."""
    from scipy.special import rel_entr

    p = np.asarray(ref_counts, dtype=np.float64)
    q = np.asarray(cur_counts, dtype=np.float64)
    p = p / p.sum()
    q = q / q.sum()
    m = (p + q) / 2.0
    js = (np.sum(rel_entr(p, m)) + np.sum(rel_entr(q, m))) / 2.0
    return float(np.sqrt(max(js, 0.0) / np.log(2.0)))


def numeric_bin_counts(
    edges: np.ndarray | list[float], ref_bin_counts: np.ndarray | list[int],
    ref_min: float, ref_max: float, cur_sorted: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference and current counts over the PSI bins of a numeric column.

    The profile stores inner quantile edges ``e0 < ... < ek`` and counts over
    ``(-inf, e0], (e0, e1], ..., (ek, inf)``. Two explicit out-of-range bins are added
    for current values below the reference minimum and above its maximum (the
    reference has 0 there), so the bins are
    ``(-inf, min), [min, e0], (e0, e1], ..., (ek, max], (max, inf)``.
    ``cur_sorted`` must be sorted and free of NaN.
    """
    edges = np.asarray(edges, dtype=np.float64)
    ref = np.concatenate([[0], np.asarray(ref_bin_counts, dtype=np.int64), [0]])
    # counts at or below each edge, found by binary search into the sorted sample
    at_or_below = np.searchsorted(cur_sorted, edges, side="right")
    below_min = np.searchsorted(cur_sorted, ref_min, side="left")
    above_max = cur_sorted.size - np.searchsorted(cur_sorted, ref_max, side="right")
    inner = np.diff(np.concatenate([[0], at_or_below, [cur_sorted.size]]))
    inner[0] -= below_min
    inner[-1] -= above_max
    cur = np.concatenate([[below_min], inner, [above_max]]).astype(np.int64)
    return ref, cur


def ks_2samp_sorted(ref_sorted: np.ndarray, cur_sorted: np.ndarray) -> tuple[float, float]:
    """Two-sample KS statistic and two-sided p-value, as ``scipy.stats.ks_2samp``.

    Both inputs sorted and NaN-free. Up to :data:`KS_EXACT_MAX_N` values per side scipy
    itself computes the exact distribution (cheap at that size); beyond it the ECDF
    difference is evaluated at every sample point with binary searches (no merge or
    re-sort of the reference) and the p-value is Smirnov's ``kstwo.sf(d, round(en))``,
    exactly what scipy does in ``method="auto"``.
    """
    from scipy import stats

    n1, n2 = ref_sorted.size, cur_sorted.size
    if n1 == 0 or n2 == 0:
        raise ValueError("ks_2samp_sorted needs two non-empty samples")
    if max(n1, n2) <= KS_EXACT_MAX_N:
        with warnings.catch_warnings():  # scipy falls back to asymp itself, and says so
            warnings.simplefilter("ignore", RuntimeWarning)
            r = stats.ks_2samp(ref_sorted, cur_sorted)
        return float(r.statistic), float(r.pvalue)
    # ECDFs (side="right") at the reference points, then at the current points
    d_ref = np.abs(_rank_right(ref_sorted) / n1 - np.searchsorted(cur_sorted, ref_sorted, side="right") / n2).max()
    d_cur = np.abs(np.searchsorted(ref_sorted, cur_sorted, side="right") / n1 - _rank_right(cur_sorted) / n2).max()
    d = float(max(d_ref, d_cur))
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    p = float(np.clip(stats.kstwo.sf(d, np.round(en)), 0.0, 1.0))
    return d, p


def _rank_right(x_sorted: np.ndarray) -> np.ndarray:
    """``searchsorted(x, x, side="right")`` for a sorted array, in O(n)."""
    n = x_sorted.size
    if n < 2:
        return np.arange(1, n + 1)
    new_value = np.empty(n, dtype=bool)
    new_value[-1] = True
    np.not_equal(x_sorted[1:], x_sorted[:-1], out=new_value[:-1])
    # each position takes the rank of the last member of its run of ties
    run_end = np.where(new_value, np.arange(n), n)
    return np.minimum.accumulate(run_end[::-1])[::-1] + 1


def wasserstein_sorted(ref_sorted: np.ndarray, cur_sorted: np.ndarray) -> float:
    """First Wasserstein distance, as ``scipy.stats.wasserstein_distance`` (unweighted).

    Computed as the integral of the distance between the two quantile functions: the
    breakpoints ``i/n1`` and ``j/n2`` are merged as integers over the common denominator
    ``lcm(n1, n2)``, so two sorted samples need no merge of their values (for equal sizes
    it is simply ``mean(|a - b|)``).
    """
    n1, n2 = ref_sorted.size, cur_sorted.size
    if n1 == n2:
        return float(np.mean(np.abs(ref_sorted - cur_sorted)))
    g = math.gcd(n1, n2)
    s1, s2 = n2 // g, n1 // g  # breakpoint i/n1 is key i*s1, j/n2 is key j*s2, over n1*s1
    keys = np.sort(np.concatenate([np.arange(n1, dtype=np.int64) * s1, np.arange(n2, dtype=np.int64) * s2]))
    widths = np.diff(keys, append=np.int64(n1) * s1)
    gaps = np.abs(ref_sorted[keys // s1] - cur_sorted[keys // s2])
    return float(np.dot(widths, gaps) / (n1 * s1))


def chi2_homogeneity(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float, int]:
    """Chi-squared test that two samples share one categorical distribution.

    Returns ``(statistic, p_value, dof)``; categories empty in both samples are dropped.
    With one category left there is nothing to test: ``(0.0, 1.0, 0)``.
    """
    from scipy import stats

    table = np.vstack([np.asarray(ref_counts, np.float64), np.asarray(cur_counts, np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0, 0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    dof = table.shape[1] - 1
    return stat, float(stats.chi2.sf(stat, dof)), dof


def benjamini_hochberg(p_values: np.ndarray | list[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); reject where ``q <= alpha``."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    q_sorted = np.minimum.accumulate(scaled[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(q_sorted, 1.0)
    return q
