"""The scikit-learn trainer: the spec's estimator, by import path, inside the preprocessing
pipeline, fitted in-process."""

from __future__ import annotations

from typing import Any

import pandas as pd

from loopml.errors import DataSourceError
from loopml.train.contract import FLAVOR_SKLEARN, RunLike, TrainedModel
from loopml.train.estimator import build_estimator, make_pipeline


class SklearnTrainer:
    """``model.kind: sklearn``."""

    @staticmethod
    def check_spec(spec: Any, source: str) -> None:
        build_estimator(spec.model.estimator, spec.model.params, source=source)

    def build(self, spec: Any, train: pd.DataFrame, params: dict[str, Any] | None = None) -> tuple[Any, Any, list, list, list]:
        """The unfitted pipeline and the estimator inside it; ``params`` override model.params."""
        from loopml.train.trainer import check_columns, feature_kinds

        features = spec.feature_columns(list(map(str, train.columns)))
        check_columns(spec, train, features)
        numeric, categorical = feature_kinds(train, features)
        merged = {**spec.model.params, **(params or {})}
        est = build_estimator(spec.model.estimator, merged)
        if "random_state" in est.get_params() and "random_state" not in merged:
            est.set_params(random_state=spec.data.split.seed)
        return make_pipeline(est, numeric, categorical, spec.model.preprocess), est, features, numeric, categorical

    def fit(self, spec: Any, train: pd.DataFrame, run: RunLike | None = None, *, workspace: Any = None,
            params: dict[str, Any] | None = None) -> TrainedModel:
        from loopml.train.trainer import coerce_features, target_of

        model, est, features, numeric, categorical = self.build(spec, train, params)
        X = coerce_features(train[features], numeric, categorical)
        y = target_of(spec, train)
        _fit(spec, model, X, y)
        return TrainedModel(model, FLAVOR_SKLEARN, features, numeric, categorical, est.get_params(), len(train))


def _fit(spec: Any, model: Any, X: pd.DataFrame, y: pd.Series) -> Any:
    try:
        return model.fit(X, y)
    except ValueError as exc:
        raise DataSourceError(spec.data.source, f"training failed: {exc}") from None
