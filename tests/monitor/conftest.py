from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def make_frame(n: int, *, seed: int, shift: float = 0.0, new_category: bool = False) -> pd.DataFrame:
    """A table with numeric and categorical columns; ``shift`` moves x0 and x1."""
    rng = np.random.default_rng(seed)
    cats = np.array(["a", "b", "c", "d"])
    d = {
        "x0": rng.normal(shift, 1.0, n),
        "x1": rng.exponential(1.0 + shift, n),
        "x2": rng.normal(10.0, 3.0, n),
        "n_items": rng.integers(0, 5, n),
        "color": rng.choice(cats, n, p=[0.4, 0.3, 0.2, 0.1]),
        "flag": rng.random(n) < 0.3,
    }
    df = pd.DataFrame(d)
    if new_category:
        df.loc[df.index[: n // 5], "color"] = "zz"
    return df


def to_log(df: pd.DataFrame, *, t0: float = 1_700_000_000.0, step: float = 1.0, model: str = "m",
           version: str = "1", variant: str = "main", proba: np.ndarray | None = None) -> pd.DataFrame:
    """The same rows shaped like a prediction-log window (``in.``/``out.`` columns)."""
    out = pd.DataFrame({
        "request_id": [f"r{i}" for i in range(len(df))],
        "ts": pd.to_datetime(t0 + step * np.arange(len(df)), unit="s", utc=True),
        "model": model, "version": version, "variant": variant,
    })
    for c in df.columns:
        out["in." + c] = df[c].to_numpy()
    p = proba if proba is not None else np.full(len(df), 0.2)
    out["out.proba"] = p
    out["out.prediction"] = (p > 0.5).astype(int)
    return out


@pytest.fixture
def reference_frame() -> pd.DataFrame:
    return make_frame(5000, seed=1)
