"""Build the spec's estimator from its import path, and wrap it in preprocessing.

Parameters are checked against the estimator's own declared constraints
(scikit-learn's ``_parameter_constraints``) so a typo in ``loopml.yaml`` reads
``loopml.yaml: model.params.max_depth: The 'max_depth' parameter ... Got 'ten' instead.``
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from loopml.errors import EstimatorImportError, SpecError


def import_estimator(path: str) -> type:
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EstimatorImportError(path, f"no module '{module_name}' ({exc.name or exc})") from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise EstimatorImportError(path, f"module '{module_name}' has no attribute '{attr}'")
    if not (hasattr(cls, "fit") and hasattr(cls, "predict")):
        raise EstimatorImportError(path, "it has no fit/predict methods (not an sklearn-style estimator)")
    return cls


def build_estimator(path: str, params: dict[str, Any], *, source: str = "loopml.yaml") -> Any:
    """Instantiate and validate; raise :class:`SpecError` naming ``model.params.<name>``."""
    cls = import_estimator(path)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    has_kwargs = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())
    for key in params:
        if key not in accepted and not has_kwargs:
            import difflib

            hint = difflib.get_close_matches(key, sorted(accepted), n=1)
            tip = f"; did you mean '{hint[0]}'?" if hint else ""
            raise SpecError(source, f"model.params.{key}: {cls.__name__} has no parameter '{key}'{tip}")
    try:
        est = cls(**params)
    except (TypeError, ValueError) as exc:
        raise SpecError(source, f"model.params: {exc}") from None
    validate = getattr(est, "_validate_params", None)
    if callable(validate) and hasattr(est, "_parameter_constraints"):
        try:
            validate()
        except (TypeError, ValueError) as exc:
            msg = str(exc)
            name = _param_named_in(msg, params)
            where = f"model.params.{name}" if name else "model.params"
            raise SpecError(source, f"{where}: {msg}") from None
    return est


def _param_named_in(message: str, params: dict[str, Any]) -> str | None:
    for key in params:
        if f"'{key}'" in message:
            return key
    return None


def make_preprocessor(numeric: list[str], categorical: list[str]) -> Any:
    """Impute and encode: numbers get median imputation and scaling, categories one-hot."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    parts = []
    if numeric:
        parts.append(("num", Pipeline([("impute", SimpleImputer(strategy="median")),
                                       ("scale", StandardScaler())]), numeric))
    if categorical:
        parts.append(("cat", Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                                       ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False))]),
                      categorical))
    return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)


def make_pipeline(estimator: Any, numeric: list[str], categorical: list[str], preprocess: str = "auto") -> Any:
    """The estimator behind :func:`make_preprocessor` (or alone with ``preprocess: none``)."""
    from sklearn.pipeline import Pipeline

    if preprocess == "none":
        return estimator
    return Pipeline([("preprocess", make_preprocessor(numeric, categorical)), ("model", estimator)])
