from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from loopml.data.profile import ReferenceProfile, build_profile
from loopml.errors import SpecError
from loopml.monitor.drift import compute_drift
from loopml.spec import MonitoringSpec

from .conftest import make_frame, to_log


@pytest.fixture
def profile(reference_frame):
    return build_profile(reference_frame)


def _no_nan(d):
    json.dumps(d, allow_nan=False)  # raises on NaN/inf anywhere


def test_same_distribution_is_not_drift(profile):
    report = compute_drift(profile, make_frame(1500, seed=2))
    assert report.drifted is False
    assert report.decided_by == "none"
    assert "Benjamini-Hochberg" in report.rule and "0 of 6" in report.rule
    assert {f.method for f in report.features} == {"ks", "chi2"}
    assert all(f.ok and f.q_value is not None for f in report.features)
    _no_nan(report.to_dict())


def test_shift_is_drift_found_by_fdr(profile):
    report = compute_drift(profile, make_frame(1500, seed=3, shift=0.4))
    assert report.drifted is True
    assert report.decided_by == "benjamini-hochberg"
    assert {f.name for f in report.drifted_features} == {"x0", "x1"}
    x0 = report.feature("x0")
    assert x0.method == "ks" and x0.q_value <= 0.05 and x0.p_value < 1e-6
    assert report.feature("x2").drifted is False


def test_unseen_category_reported_by_name(profile):
    report = compute_drift(profile, make_frame(1500, seed=4, new_category=True))
    color = report.feature("color")
    assert color.method == "chi2" and color.drifted
    assert color.unseen == {"zz": 300}
    assert "zz" in color.bins and color.current_counts[color.bins.index("zz")] == 300
    assert color.reference_counts[color.bins.index("zz")] == 0


def test_log_window_equals_plain_frame(profile):
    cur = make_frame(800, seed=5, shift=0.2)
    a = compute_drift(profile, cur).to_dict()
    b = compute_drift(profile, to_log(cur)).to_dict()
    assert a["features"] == b["features"] and a["drifted"] == b["drifted"]


def test_bad_input_has_explicit_status_never_nan(profile):
    cur = make_frame(500, seed=6)
    cur.loc[cur.index[:490], "x0"] = np.nan  # 10 values left
    cur["x1"] = np.nan  # all missing
    cur["x2"] = "text"  # type changed
    cur = cur.drop(columns=["n_items"])
    report = compute_drift(profile, cur, features=["x0", "x1", "x2", "n_items", "color", "nope"])
    status = {f.name: f.status for f in report.features}
    assert status["x0"] == "insufficient data: 10 values, need 30"
    assert status["x1"] == "all missing in current window"
    assert status["x2"] == "schema changed: x2 was numeric, now text"
    assert status["n_items"] == "schema changed: column n_items missing"
    assert status["nope"] == "schema changed: column nope not in the reference"
    assert status["color"] == "ok"
    for f in report.problems:
        assert f.drifted is False and f.statistic is None and f.method == "none"
    assert len(report.problems) == 5
    _no_nan(report.to_dict())


def test_empty_window(profile):
    report = compute_drift(profile, make_frame(0, seed=7))
    assert report.drifted is False
    assert all(f.status == "insufficient data: empty window" for f in report.features)
    assert report.rule == "no column could be checked"
    _no_nan(report.to_dict())


def test_constant_columns():
    ref = build_profile(pd.DataFrame({"k": np.ones(1000), "c": ["x"] * 1000}))
    same = compute_drift(ref, pd.DataFrame({"k": np.ones(200), "c": ["x"] * 200}))
    assert not same.drifted
    assert same.feature("k").statistic == 0.0 and same.feature("k").p_value == 1.0
    assert same.feature("c").p_value == 1.0
    moved = compute_drift(ref, pd.DataFrame({"k": np.full(200, 2.0), "c": ["y"] * 200}))
    assert moved.feature("k").drifted and moved.feature("c").drifted
    assert moved.feature("c").unseen == {"y": 200}
    _no_nan(moved.to_dict())


def test_large_windows_use_effect_size():
    rng = np.random.default_rng(0)
    ref = build_profile(pd.DataFrame({"a": rng.normal(0, 1, 20_000), "b": rng.normal(0, 1, 20_000)}))
    # a negligible shift: a test at n=20,000 would flag it, the effect size does not
    cur = pd.DataFrame({"a": rng.normal(0.05, 1, 20_000), "b": rng.normal(1.0, 1, 20_000)})
    report = compute_drift(ref, cur)
    a, b = report.feature("a"), report.feature("b")
    assert a.method == b.method == "psi"
    assert a.statistic < 0.2 <= b.statistic
    assert not a.drifted and b.drifted
    assert report.decided_by == "effect size"
    assert "effect size: 1 of 2" in report.rule


def test_fdr_controls_false_alarms_that_raw_p_values_raise():
    """20 columns, no drift: some raw p-values fall under 0.05, BH stays quiet."""
    rng = np.random.default_rng(11)
    ref_df = pd.DataFrame({f"f{i}": rng.normal(0, 1, 2000) for i in range(20)})
    ref = build_profile(ref_df)
    raw_alarms = bh_alarms = 0
    for seed in range(10):
        r = np.random.default_rng(100 + seed)
        cur = pd.DataFrame({f"f{i}": r.normal(0, 1, 500) for i in range(20)})
        report = compute_drift(ref, cur)
        raw_alarms += any(f.p_value < 0.05 for f in report.features)
        bh_alarms += report.drifted
    assert raw_alarms >= 5
    assert bh_alarms <= 1


def test_settings_override_method_threshold_and_skip(profile):
    settings = MonitoringSpec(features={"x0": {"method": "wasserstein", "threshold": 0.3},
                                        "x2": {"skip": True}, "color": {"method": "psi"}})
    report = compute_drift(profile, make_frame(1500, seed=8, shift=0.4), settings=settings)
    x0 = report.feature("x0")
    assert x0.method == "wasserstein" and x0.threshold == 0.3
    assert x0.statistic == pytest.approx(x0.scores["wasserstein"]) and x0.drifted
    assert report.feature("color").method == "psi"
    with pytest.raises(KeyError):
        report.feature("x2")
    bad = MonitoringSpec(features={"color": {"method": "ks"}})
    with pytest.raises(SpecError, match="color.method"):
        compute_drift(profile, make_frame(100, seed=9), settings=bad)
    with pytest.raises(ValueError, match="methd"):  # a typo is refused when the spec is built (#8)
        MonitoringSpec(features={"x0": {"methd": "ks"}})


def test_profile_without_sorted_values_falls_back_to_psi(profile, tmp_path):
    profile.save(tmp_path)
    (tmp_path / "profile_values.npz").unlink()
    loaded = ReferenceProfile.load(tmp_path)
    report = compute_drift(loaded, make_frame(1000, seed=10, shift=1.0))
    assert report.feature("x0").method == "psi" and report.feature("x0").drifted


def test_new_and_missing_columns_listed(profile):
    cur = make_frame(300, seed=12).drop(columns=["x2"]).assign(extra=1.0)
    report = compute_drift(profile, cur)
    assert report.missing_columns == ["x2"]
    assert report.new_columns == ["extra"]


def test_scores_are_finite(profile):
    report = compute_drift(profile, make_frame(2000, seed=13, shift=0.1))
    for f in report.features:
        assert all(math.isfinite(v) for v in f.scores.values())
        assert sum(f.reference_counts) == f.n_reference and sum(f.current_counts) == f.n_current


def test_no_column_checked_is_could_not_decide_not_no_drift(profile):
    report = compute_drift(profile, make_frame(10, seed=8))  # 10 rows: every column under min_rows
    assert not any(f.ok for f in report.features)
    assert report.verdict == "could not decide" and report.drifted is False
    assert report.to_dict()["verdict"] == "could not decide"
    # a window that was checked keeps its verdicts
    assert compute_drift(profile, make_frame(1500, seed=2)).verdict == "no drift"
    assert compute_drift(profile, make_frame(1500, seed=3, shift=0.4)).to_dict()["verdict"] == "drift"
