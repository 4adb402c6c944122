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
