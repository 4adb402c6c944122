"""Each drift statistic equals a direct SciPy/NumPy computation to 1e-9 (property-based)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial.distance import jensenshannon

from loopml.data.profile import build_profile
from loopml.monitor import stats as ms

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy's own exact->asymp notice

TOL = dict(rel=1e-9, abs=1e-9)

# samples with ties (small integer grid) or continuous values, including negatives
values = st.one_of(
    st.lists(st.integers(-5, 5).map(float), min_size=1, max_size=300),
    st.lists(st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=300),
)


@settings(max_examples=200, deadline=None)
@given(values, values)
def test_ks_equals_scipy_small(a, b):
    a, b = np.sort(np.array(a)), np.sort(np.array(b))
    d, p = ms.ks_2samp_sorted(a, b)
    r = stats.ks_2samp(a, b)
    assert d == pytest.approx(r.statistic, **TOL)
    assert p == pytest.approx(r.pvalue, **TOL)


@settings(max_examples=25, deadline=None)
@given(st.integers(10_001, 30_000), st.integers(100, 30_000), st.integers(0, 2**31),
       st.floats(-0.3, 0.3), st.booleans())
def test_ks_equals_scipy_large(n1, n2, seed, shift, ties):
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1, n1)
    b = rng.normal(shift, 1, n2)
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    d, p = ms.ks_2samp_sorted(np.sort(a), np.sort(b))
    r = stats.ks_2samp(a, b)
    assert d == pytest.approx(r.statistic, **TOL)
    assert p == pytest.approx(r.pvalue, **TOL)


@settings(max_examples=200, deadline=None)
@given(values, values)
def test_wasserstein_equals_scipy(a, b):
    a, b = np.array(a), np.array(b)
    w = ms.wasserstein_sorted(np.sort(a), np.sort(b))
    assert w == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-9, abs=1e-9 * max(1.0, np.abs(np.r_[a, b]).max()))


counts = st.lists(st.integers(0, 10_000), min_size=2, max_size=30)


@settings(max_examples=200, deadline=None)
@given(counts, st.data())
def test_js_equals_scipy(r, data):
    c = data.draw(st.lists(st.integers(0, 10_000), min_size=len(r), max_size=len(r)))
    if sum(r) == 0 or sum(c) == 0:
        return
    assert ms.js_distance(r, c) == pytest.approx(jensenshannon(r, c, base=2), **TOL)


@settings(max_examples=200, deadline=None)
@given(counts, st.data())
def test_psi_equals_numpy(r, data):
    c = data.draw(st.lists(st.integers(0, 10_000), min_size=len(r), max_size=len(r)))
    if sum(r) == 0 or sum(c) == 0:
        return
    p = np.array(r) / sum(r)
    q = np.array(c) / sum(c)
    p[p < 1e-4] = 1e-4
    q[q < 1e-4] = 1e-4
    expected = sum((qi - pi) * np.log(qi / pi) for pi, qi in zip(p, q))
    assert ms.psi(r, c) == pytest.approx(expected, **TOL)
    assert ms.psi(r, r) == 0.0


@settings(max_examples=200, deadline=None)
@given(counts, st.data())
def test_chi2_equals_scipy_contingency(r, data):
    c = data.draw(st.lists(st.integers(0, 10_000), min_size=len(r), max_size=len(r)))
    table = np.array([r, c])
    table = table[:, table.sum(axis=0) > 0]
    stat, p, dof = ms.chi2_homogeneity(r, c)
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        assert (stat, p, dof) == (0.0, 1.0, 0)
        return
    res = stats.chi2_contingency(table, correction=False)
    assert stat == pytest.approx(res.statistic, **TOL)
    assert p == pytest.approx(res.pvalue, **TOL)
    assert dof == res.dof


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=50))
def test_benjamini_hochberg_equals_scipy(p):
    q = ms.benjamini_hochberg(p)
    assert q == pytest.approx(stats.false_discovery_control(p, method="bh"), **TOL)


@settings(max_examples=100, deadline=None)
@given(values, values)
def test_numeric_bins_match_direct_count(ref, cur):
    """Bins from the profile equal a direct count with explicit out-of-range bins."""
    import pandas as pd

    prof = build_profile(pd.DataFrame({"x": ref}))
    col = prof.columns["x"]
    cur = np.sort(np.array(cur))
    r, c = ms.numeric_bin_counts(col.bin_edges, col.bin_counts, col.min, col.max, cur)
    edges = np.array(col.bin_edges)
    ref_arr = np.array(ref)

    def direct(x):
        below = np.sum(x < col.min)
        above = np.sum(x > col.max)
        inside = x[(x >= col.min) & (x <= col.max)]
        mids = [np.sum(inside <= edges[0])] if edges.size else [inside.size]
        mids += [np.sum((inside > lo) & (inside <= hi)) for lo, hi in zip(edges[:-1], edges[1:])]
        if edges.size:
            mids.append(np.sum(inside > edges[-1]))
        return [below, *mids, above]

    assert c.tolist() == direct(cur)
    assert r.tolist() == direct(ref_arr)
    assert r.sum() == len(ref) and c.sum() == len(cur)


def test_rank_right_handles_ties():
    x = np.array([1.0, 1.0, 2.0, 3.0, 3.0, 3.0])
    assert ms._rank_right(x).tolist() == np.searchsorted(x, x, side="right").tolist()


def test_ks_rejects_empty():
    with pytest.raises(ValueError):
        ms.ks_2samp_sorted(np.array([]), np.array([1.0]))
