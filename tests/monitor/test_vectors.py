"""Text and vector columns of the prediction log (loopml.monitor.vectors, window_drift)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from loopml.monitor.vectors import is_text_column, is_vector_column, split_columns, vector_drift
from loopml.monitor.window_drift import window_drift

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi".split()


def _sentences(rng, n, lo, hi):
    return [" ".join(rng.choice(WORDS, rng.integers(lo, hi + 1))) + f" #{i}" for i in range(n)]


def _log(rng, n, *, words=(3, 8), shift=0.0, dims=12):
    vec = rng.normal(size=(n, dims))
    vec[:, :2] += shift
    return pd.DataFrame({
        "request_id": [f"r{i}" for i in range(n)], "ts": pd.Timestamp("2026-11-23") + pd.to_timedelta(np.arange(n), "s"),
        "model": "m", "version": "1", "variant": "champion",
        "in.text": _sentences(rng, n, *words),
        "in.channel": rng.choice(["web", "app"], n),  # a categorical string column: stays categorical
        "out.prediction": list(vec), "out.proba": None})


def test_text_and_vector_columns_are_told_from_categories():
    rng = np.random.default_rng(0)
    df = _log(rng, 100)
    assert is_text_column(df["in.text"]) and not is_text_column(df["in.channel"])
    assert is_vector_column(df["out.prediction"]) and not is_vector_column(df["in.text"])
    assert not is_vector_column(pd.Series([[1.0, 2.0], [1.0, 2.0, 3.0]]))  # ragged: not one vector column
    scalars, vectors, kinds = split_columns(df)
    assert kinds == {"in.text": "text", "out.prediction": "vector"}
    assert {"in.text.chars", "in.text.words", "in.channel"} <= set(scalars.columns)
    assert "in.text" not in scalars.columns and vectors["out.prediction"].shape == (100, 12)
    words = df["in.text"].str.split().str.len()
    assert (scalars["in.text.words"] == words).all()


def test_same_distribution_is_not_drift_and_a_shift_is():
    rng = np.random.default_rng(1)
    ref, same, moved = rng.normal(size=(300, 16)), rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    moved[:, :3] += 0.4
    calm = vector_drift("e", ref, same, role="output", fdr=0.05)
    drift = vector_drift("e", ref, moved, role="output", fdr=0.05)
    assert calm.ok and not calm.drifted and calm.statistic < 0.55
    assert drift.drifted and drift.statistic >= 0.55 and drift.p_value < 1e-6
    assert drift.kind == "vector" and drift.method == "model" and "mean_cosine_distance" in drift.scores


def test_few_or_mismatched_vectors_are_no_verdict():
    rng = np.random.default_rng(2)
    few = vector_drift("e", rng.normal(size=(100, 4)), rng.normal(size=(10, 4)), role="output", fdr=0.05)
    assert not few.ok and few.status.startswith("insufficient data") and not few.drifted
    dims = vector_drift("e", rng.normal(size=(100, 4)), rng.normal(size=(100, 5)), role="output", fdr=0.05)
    assert dims.status.startswith("schema changed") and not dims.drifted


def test_window_drift_flags_longer_texts_and_moved_embeddings_only_when_they_moved():
    rng = np.random.default_rng(3)
    reference = _log(rng, 400)
    calm = window_drift(reference, _log(rng, 400))
    assert not calm.drifted, [(f.name, f.statistic) for f in calm.features + calm.outputs.features if f.drifted]
    longer = window_drift(reference, _log(rng, 400, words=(10, 20)))
    drifted_in = {f.name for f in longer.features if f.drifted}
    assert {"text.chars", "text.words"} <= drifted_in and "channel" not in drifted_in
    assert not longer.outputs.drifted
    moved = window_drift(reference, _log(rng, 400, shift=0.5))
    out = {f.name: f for f in moved.outputs.features}
    assert moved.outputs.drifted and out["out.prediction"].drifted and out["out.prediction"].kind == "vector"
    assert "out.proba" not in out  # all empty in the reference: nothing to compare
    assert moved.window["reference"] == {"rows": 400, "text": ["in.text"], "vectors": ["out.prediction"]}
