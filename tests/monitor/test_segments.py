from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loopml.data.profile import build_profile
from loopml.errors import MonitorError
from loopml.monitor.segments import compute_prediction_drift, compute_segment_drift

from .conftest import make_frame, to_log


def test_prediction_drift_against_target_and_output_profile():
    rng = np.random.default_rng(0)
    train = make_frame(4000, seed=1).assign(label=(rng.random(4000) < 0.1).astype(int))
    ref = build_profile(train)
    calm = to_log(make_frame(1000, seed=2), proba=np.where(rng.random(1000) < 0.1, 0.9, 0.1))
    busy = to_log(make_frame(1000, seed=3), proba=np.where(rng.random(1000) < 0.5, 0.9, 0.1))
    r_calm = compute_prediction_drift(ref, calm, target="label")
    r_busy = compute_prediction_drift(ref, busy, target="label")
    assert [f.name for f in r_busy.features] == ["out.prediction"]
    assert all(f.role == "output" for f in r_busy.features)
    assert not r_calm.drifted and r_busy.drifted
    # with a profile of the model's own outputs, out.proba is compared too
    out_ref = build_profile(pd.DataFrame({"out.proba": rng.beta(1, 8, 3000)}))
    r = compute_prediction_drift(out_ref, busy)
    assert [f.name for f in r.features] == ["out.proba"] and r.drifted


def test_segment_drift_finds_the_drifted_slice():
    ref_df = make_frame(6000, seed=1)
    cur = make_frame(3000, seed=2)
    mask = (cur["color"] == "a").to_numpy()
    cur.loc[mask, "x2"] = cur.loc[mask, "x2"] + 4.0
    reports = compute_segment_drift(build_profile(ref_df), to_log(cur), by="color")
    assert set(reports) == {"a", "b", "c", "d"}
    assert reports["a"].drifted and reports["a"].feature("x2").drifted
    assert not reports["b"].drifted and not reports["c"].drifted
    assert all("color" not in [f.name for f in r.features] for r in reports.values())
    assert reports["a"].window["segment"] == {"color": "a"}
    # per-segment reference profiles
    per = {k: build_profile(g) for k, g in ref_df.groupby("color")}
    reports = compute_segment_drift(per, cur, by="color")
    assert reports["a"].drifted and not reports["d"].drifted
    with pytest.raises(MonitorError, match="nope"):
        compute_segment_drift(per, cur, by="nope")


def test_classifier_predictions_are_compared_per_class_not_as_numbers():
    rng = np.random.default_rng(5)
    train = make_frame(4000, seed=1).assign(label=(rng.random(4000) < 0.1).astype(int))
    ref = build_profile(train)
    assert ref.columns["label"].kind == "numeric"  # the snapshot profiles 0/1 labels as numbers
    busy = to_log(make_frame(1000, seed=3), proba=np.where(rng.random(1000) < 0.3, 0.9, 0.1))
    busy["out.prediction"] = busy["out.prediction"].astype(float)  # a log may hold 1.0 for class 1
    f = compute_prediction_drift(ref, busy, target="label").feature("out.prediction")
    assert f.kind == "categorical" and f.method == "chi2" and f.drifted
    assert sorted(f.bins) == ["0", "1"] and not f.unseen  # 1.0 is class "1", not a new value
    assert sum(f.reference_counts) == 4000 and sum(f.current_counts) == 1000
    # integer predictions of a regressor (a count: n_items 0..4) stay numbers; a classifier's are classes
    counts = busy.assign(**{"out.prediction": busy["in.n_items"]})
    reg = compute_prediction_drift(ref, counts, target="n_items", classification=False)
    assert reg.feature("out.prediction").kind == "numeric"
    clf = compute_prediction_drift(ref, counts.drop(columns=["out.proba"]), target="n_items", classification=True)
    assert clf.feature("out.prediction").kind == "categorical"


def test_segments_check_declared_class_columns_as_categories():
    ref = build_profile(make_frame(4000, seed=1))
    reports = compute_segment_drift(ref, to_log(make_frame(2000, seed=2)), by="color", classes={"n_items"})
    assert {r.feature("n_items").kind for r in reports.values()} == {"categorical"}
