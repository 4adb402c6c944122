"""Split, column checks and feature coercion shared by every trainer; ``train_model`` hands
the fit to the trainer of ``model.kind`` (loopml.train.contract)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from loopml.errors import DataSourceError
from loopml.spec import ProjectSpec
from loopml.train.contract import RunLike, TrainedModel, trainer_for


@dataclass
class Split:
    train: pd.DataFrame
    test: pd.DataFrame


TrainResult = TrainedModel  # the name before the trainer contract


def split_frame(spec: ProjectSpec, df: pd.DataFrame) -> Split:
    """Hold out ``data.split.test_size``: the most recent rows when ``by: time``, else a seeded draw."""
    s = spec.data.split
    n_test = max(1, int(round(len(df) * s.test_size)))
    if len(df) - n_test < 2:
        raise DataSourceError(spec.data.source, f"only {len(df)} rows: too few to split into train and holdout")
    if s.by == "time":
        col = spec.data.timestamp
        if not col or col not in df.columns:
            raise DataSourceError(spec.data.source, "data.split.by is 'time' but data.timestamp names no column of the data")
        ordered = df.sort_values(col, kind="mergesort")
        return Split(ordered.iloc[:-n_test], ordered.iloc[-n_test:])
    rng = np.random.default_rng(s.seed)
    idx = rng.permutation(len(df))
    return Split(df.iloc[idx[n_test:]].sort_index(), df.iloc[idx[:n_test]].sort_index())


def feature_kinds(df: pd.DataFrame, features: list[str]) -> tuple[list[str], list[str]]:
    numeric = [c for c in features if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    categorical = [c for c in features if c not in numeric]
    return numeric, categorical


def check_columns(spec: ProjectSpec, df: pd.DataFrame, features: list[str]) -> None:
    missing = [c for c in [*features, spec.data.target] if c not in df.columns]
    if missing:
        raise DataSourceError(spec.data.source, f"column(s) {', '.join(missing)} named in loopml.yaml are not in the data; "
                              f"columns are: {', '.join(map(str, df.columns))}")


def target_of(spec: ProjectSpec, train: pd.DataFrame) -> pd.Series:
    y = train[spec.data.target]
    if y.isna().any():  # the pipeline's contract (contract_for) rejects these first, counting every row
        raise DataSourceError(spec.data.source, f"target column '{spec.data.target}' has {int(y.isna().sum())} missing "
                              "values in the training split; drop or fill them")
    return y


def train_model(spec: ProjectSpec, train: pd.DataFrame, run: RunLike | None = None, *,
                workspace: Any = None) -> TrainedModel:
    """Fit the spec's model with the trainer of ``model.kind`` (see loopml.train.contract)."""
    return trainer_for(spec).fit(spec, train, run, workspace=workspace)


def coerce_features(X: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """Numbers as float64, categories as objects with NaN for missing: what the pipeline was fitted on."""
    out = {}
    for c in X.columns:
        if c in numeric:
            out[c] = pd.to_numeric(X[c], errors="coerce").astype("float64")
        else:
            out[c] = X[c].astype(object).where(X[c].notna(), np.nan)
    return pd.DataFrame(out, index=X.index)
