"""Integer class labels are checked as categories (loopml.monitor.classes)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from loopml.data.profile import ReferenceProfile, build_profile
from loopml.demo.project import write_spec
from loopml.monitor.classes import class_columns, class_labels
from loopml.monitor.drift import compute_drift
from loopml.monitor.service import drift_check
from loopml.spec import load_spec

from .conftest import make_frame, to_log


def test_binary_integer_column_is_a_class():
    rng = np.random.default_rng(0)
    ref = build_profile(pd.DataFrame({"online": (rng.random(3000) < 0.6).astype(int),
                                      "count": rng.poisson(3, 3000)}))
    cur = pd.DataFrame({"online": (rng.random(800) < 0.35).astype(int), "count": rng.poisson(3, 800)})
    report = compute_drift(ref, cur)
    online = report.feature("online")
    assert online.kind == "categorical" and online.method == "chi2" and online.drifted
    assert sorted(online.bins) == ["0", "1"]
    assert report.feature("count").kind == "numeric"  # a count is a number, not a class


def test_declared_classes_are_categorical_and_unseen_classes_named():
    ref = build_profile(make_frame(4000, seed=1))  # n_items: integers 0..4
    cur = make_frame(1000, seed=2)
    cur.loc[cur.index[:200], "n_items"] = 9
    report = compute_drift(ref, cur, classes={"n_items"})
    f = report.feature("n_items")
    assert f.kind == "categorical" and f.method == "chi2" and f.drifted
    assert f.unseen == {"9": 200}
    assert compute_drift(ref, cur).feature("n_items").kind == "numeric"  # undeclared: a number


def test_without_stored_values_a_class_column_stays_numeric(tmp_path):
    ref = build_profile(pd.DataFrame({"flag01": np.tile([0, 1], 500)}))
    ref.save(tmp_path)
    (tmp_path / "profile_values.npz").unlink()  # an old profile: no exact values to count classes
    f = compute_drift(ReferenceProfile.load(tmp_path), pd.DataFrame({"flag01": np.tile([0, 1], 100)}),
                      classes={"flag01"}).feature("flag01")
    assert f.kind == "numeric" and f.ok


def test_class_labels_are_one_label_per_class():
    s = pd.Series([1, 1.0, "1", " 1 ", 0.5, None, "no"], dtype=object)
    assert class_labels(s).tolist()[:5] == ["1", "1", "1", "1", "0.5"]
    assert pd.isna(class_labels(s).iloc[5]) and class_labels(s).iloc[6] == "no"


def test_spec_declares_target_and_allowed_columns_as_classes(tmp_path):
    from loopml.demo.data import generate_transactions

    spec = load_spec(write_spec(tmp_path / "proj").parent)
    train = generate_transactions(3000, period=1)
    ref = build_profile(train)
    assert class_columns(spec, ref) >= {"is_fraud", "card_present"}
    recent = generate_transactions(1000, period=2)
    window = to_log(recent[spec.feature_columns(list(recent.columns))], proba=np.full(1000, 0.9))
    report = drift_check(ref, window, spec)
    assert report.feature("card_present").kind == "categorical"  # contract: allowed [0, 1]
    assert report.feature("hour").kind == "numeric"  # an int with min/max is a number
    pred = report.outputs.feature("out.prediction")  # compared with is_fraud, per class
    assert pred.kind == "categorical" and pred.method == "chi2" and pred.drifted
