"""The PyTorch trainer (``model.kind: torch``): a network on tabular data.

Features are imputed, scaled and one-hot encoded by the same preprocessing as scikit-learn
models (fitted on the training part only); ``early_stopping.validation_fraction`` of the
training split is held out for the validation loss. Classes become indices into ``classes_``;
a regression target is standardised for training and scaled back on predict. The loop
(:mod:`loopml.train.torch_loop`) runs in-process, or on Ray Train with
``training.backend: ray`` (:mod:`loopml.train.ray_backend`).
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from loopml.errors import SpecError
from loopml.train.contract import FLAVOR_TORCH, RunLike, TrainedModel

BUILT_BY_LOOPML = ("in_features", "out_features")


def _torch_or_spec_error(source: str) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SpecError(source, "model.kind: torch needs PyTorch; install the extra: pip install 'loopml[torch]'") from None


def build_module(path: str, in_features: int, out_features: int, params: dict[str, Any], *,
                 source: str = "loopml.yaml") -> Any:
    """``Class(in_features, out_features, **params)``; problems as SpecError naming the field."""
    _torch_or_spec_error(source)
    from loopml.train.torch_model import import_module_class

    try:
        cls = import_module_class(path)
    except (ImportError, TypeError) as exc:
        raise SpecError(source, f"model.module: cannot use '{path}': {exc}; give 'package.module:ClassName' "
                                "of an installed torch.nn.Module") from None
    sig = inspect.signature(cls.__init__).parameters
    missing = [b for b in BUILT_BY_LOOPML if b not in sig]
    if missing and not any(p.kind is p.VAR_KEYWORD for p in sig.values()):
        raise SpecError(source, f"model.module: {cls.__name__} must take in_features and out_features "
                                "(loopml passes the encoded feature count and the class count)")
    accepted = set(sig) - {"self", *BUILT_BY_LOOPML}
    for key in params:
        if key in BUILT_BY_LOOPML:
            raise SpecError(source, f"model.params.{key}: set by loopml from the data; remove it")
        if key not in accepted and not any(p.kind is p.VAR_KEYWORD for p in sig.values()):
            hint = difflib.get_close_matches(key, sorted(accepted), n=1)
            raise SpecError(source, f"model.params.{key}: {cls.__name__} has no parameter '{key}'"
                                    + (f"; did you mean '{hint[0]}'?" if hint else ""))
    try:
        return cls(in_features=in_features, out_features=out_features, **params)
    except (TypeError, ValueError) as exc:
        name = next((k for k in params if f"'{k}'" in str(exc)), None)
        raise SpecError(source, f"model.params{'.' + name if name else ''}: {exc}") from None


@dataclass
class TorchData:
    """The training split turned into what the loop eats, plus what predicting needs."""

    preprocess: Any
    X: np.ndarray
    y: np.ndarray
    X_val: np.ndarray | None
    y_val: np.ndarray | None
    features: list[str]
    numeric: list[str]
    categorical: list[str]
    classes: np.ndarray | None
    y_mean: float
    y_std: float

    @property
    def out_features(self) -> int:
        return len(self.classes) if self.classes is not None else 1


def prepare(spec: Any, train: pd.DataFrame, validation_fraction: float | None = None) -> TorchData:
    from loopml.train.estimator import make_preprocessor
    from loopml.train.trainer import check_columns, coerce_features, feature_kinds, target_of

    features = spec.feature_columns(list(map(str, train.columns)))
    check_columns(spec, train, features)
    numeric, categorical = feature_kinds(train, features)
    X_all = coerce_features(train[features], numeric, categorical)
    y_all = target_of(spec, train).to_numpy()
    es = spec.model.early_stopping
    frac = validation_fraction if validation_fraction is not None else (es.validation_fraction if es else 0.0)
    order = np.random.default_rng(spec.data.split.seed).permutation(len(X_all))
    n_val = int(round(len(order) * frac)) if frac else 0
    fit_idx, val_idx = order[n_val:], order[:n_val]
    pre = make_preprocessor(numeric, categorical).fit(X_all.iloc[fit_idx])
    enc = lambda idx: np.asarray(pre.transform(X_all.iloc[idx]), dtype=np.float32)  # noqa: E731
    classes, y_mean, y_std = None, 0.0, 1.0
    if spec.task == "classification":
        classes = np.unique(y_all)
        y_enc = np.searchsorted(classes, y_all).astype(np.int64)
    else:
        y_f = y_all.astype(np.float64)
        y_mean, y_std = float(y_f[fit_idx].mean()), float(y_f[fit_idx].std() or 1.0)
        y_enc = ((y_f - y_mean) / y_std).astype(np.float32)
    return TorchData(pre, enc(fit_idx), y_enc[fit_idx], enc(val_idx) if n_val else None,
                     y_enc[val_idx] if n_val else None, features, numeric, categorical, classes, y_mean, y_std)


class TorchTrainer:
    """``model.kind: torch``. ``overrides`` (tuning) replace model.params entries and the loop
    settings lr, weight_decay, batch_size, epochs."""

    @staticmethod
    def check_spec(spec: Any, source: str) -> None:
        build_module(spec.model.module, 4, 2, dict(spec.model.params), source=source)

    def fit(self, spec: Any, train: pd.DataFrame, run: RunLike | None = None, *, workspace: Any = None,
            params: dict[str, Any] | None = None, loop: dict[str, Any] | None = None) -> TrainedModel:
        import torch

        from loopml.train.torch_loop import LoopConfig, run_epochs
        from loopml.train.torch_model import TorchTabularModel

        data = prepare(spec, train)
        cfg = LoopConfig.from_spec(spec, loop)
        init = {"in_features": int(data.X.shape[1]), "out_features": data.out_features,
                **spec.model.params, **(params or {})}
        history: dict[str, Any] = {}
        if spec.training.backend == "ray":
            from loopml.train.ray_backend import fit_torch_on_ray

            best_state, history = fit_torch_on_ray(spec, data, cfg, init, run, workspace)
            module = build_module(spec.model.module, **_split_init(init))
        else:
            torch.manual_seed(cfg.seed)
            module = build_module(spec.model.module, **_split_init(init))

            from loopml.train import progress

            # the progress record (loopml status) lives in the workspace: only a fit given one writes it
            record = progress.progress_file(workspace.home, spec.name) if workspace is not None else None

            def log_epoch(state: Any, metrics: dict[str, float]) -> None:
                if run is not None:
                    run.log_metrics(metrics, step=state.epoch - 1)
                if record is not None:
                    progress.update_progress(record, epoch=state.epoch, **metrics)

            if record is not None:
                progress.start_progress(record, run_id=getattr(run, "run_id", None), backend="local", workers=1,
                                        epochs=cfg.epochs)
            ok = False
            try:
                state = run_epochs(module, data.X, data.y, data.X_val, data.y_val, cfg, on_epoch=log_epoch)
                ok = True
            finally:
                if record is not None:
                    progress.finish_progress(record, ok)
            best_state = state.best_state
            history = {"epochs": state.epoch, "stopped_early": state.stopped_early, "history": state.history}
        module.load_state_dict(best_state)
        model = TorchTabularModel(data.preprocess, module, module_path=spec.model.module, init_args=init,
                                  task=spec.task, classes=data.classes, y_mean=data.y_mean, y_std=data.y_std)
        params_out = {**init, "loss": cfg.loss, "optimizer": cfg.optimizer, "lr": cfg.lr,
                      "weight_decay": cfg.weight_decay, "batch_size": cfg.batch_size, "epochs": cfg.epochs,
                      "epochs_run": history.get("epochs")}
        return TrainedModel(model, FLAVOR_TORCH, data.features, data.numeric, data.categorical, params_out,
                            len(train), history)


def _split_init(init: dict[str, Any]) -> dict[str, Any]:
    rest = {k: v for k, v in init.items() if k not in BUILT_BY_LOOPML}
    return {"in_features": init["in_features"], "out_features": init["out_features"], "params": rest}
