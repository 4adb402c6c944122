"""Hyperparameter tuning on Ray Tune (``tuning:``; ``loopml tune``).

Each trial fits the spec's model with one sampled configuration on the training split less
``tuning.validation_fraction`` (a seeded draw) and reports the task's metrics on that held-out
part: once for a scikit-learn estimator, after every epoch for the PyTorch trainer, so
``scheduler: asha`` can stop poor trials early. A trial is one Ray Tune function trial with one
CPU and the in-process loop (``torch.set_num_threads(1)``): trials are the parallelism.

Workers need no tracking access: the driver's :class:`TrialLog` callback turns Tune's trial
events into MLflow child runs of the tuning run (tag ``mlflow.parentRunId``) with the trial's
params and per-report metrics, and keeps the rows a live table shows. The holdout the gate
judges is never seen by a trial.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
from ray.tune import Callback

from loopml.evaluate.names import TASK_METRICS
from loopml.train.tune_space import metric_and_mode, param_space, plain

# what a trial's report carries to its MLflow child run
LOGGED = frozenset(m for ms in TASK_METRICS.values() for m in ms) | {"train_loss", "val_loss"}


@dataclass
class TrialRow:
    """What the live table shows of one trial."""

    trial_id: str
    config: dict[str, Any]
    status: str = "PENDING"
    reports: int = 0
    metric: float | None = None  # the latest report of the tuning metric
    run_id: str | None = None


@dataclass
class TuneOutcome:
    metric: str
    mode: str
    rows: list[TrialRow]
    best: TrialRow | None
    seconds: float
    finished: int = 0
    first_report_s: float | None = None  # from the start of tuning to the first trial's report


def tuning_split(spec: Any, train: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fit part, validation part) of the training split, seeded by data.split.seed."""
    n_val = max(1, int(round(len(train) * spec.tuning.validation_fraction)))
    order = np.random.default_rng(spec.data.split.seed).permutation(len(train))
    return train.iloc[np.sort(order[n_val:])], train.iloc[np.sort(order[:n_val])]


def run_trial(config: dict[str, Any], spec: Any, fit_df: pd.DataFrame, val_df: pd.DataFrame,
              report: Callable[[dict[str, float]], None]) -> None:
    """Fit one configuration and ``report`` the validation metrics (per epoch for torch). The same
    code runs inside a Tune trial (``report`` is ``tune.report``) and in a plain loop."""
    from loopml.evaluate.metrics import task_metrics
    from loopml.train.tune_space import tuned_spec
    from loopml.train.trainer import coerce_features

    trial_spec = tuned_spec(spec, config)
    if trial_spec.model.kind != "torch":
        from loopml.train.sklearn_trainer import SklearnTrainer

        trained = SklearnTrainer().fit(trial_spec, fit_df)
        X = coerce_features(val_df[trained.features], trained.numeric, trained.categorical)
        report({**task_metrics(spec.task, trained.model, X, val_df[spec.data.target]), "epoch": 1})
        return
    import torch

    from loopml.train.torch_loop import LoopConfig, run_epochs
    from loopml.train.torch_model import TorchTabularModel
    from loopml.train.torch_trainer import _split_init, build_module, prepare

    torch.set_num_threads(1)  # one core per trial: trials are the parallelism
    data = prepare(trial_spec, fit_df)
    cfg = LoopConfig.from_spec(trial_spec)
    init = {"in_features": int(data.X.shape[1]), "out_features": data.out_features, **trial_spec.model.params}
    torch.manual_seed(cfg.seed)
    module = build_module(trial_spec.model.module, **_split_init(init))
    X_val = coerce_features(val_df[data.features], data.numeric, data.categorical)

    def on_epoch(state: Any, losses: dict[str, float]) -> None:
        model = TorchTabularModel(data.preprocess, module, module_path=trial_spec.model.module, init_args=init,
                                  task=spec.task, classes=data.classes, y_mean=data.y_mean, y_std=data.y_std)
        report({**task_metrics(spec.task, model, X_val, val_df[spec.data.target]), **losses,
                "epoch": state.epoch})

    run_epochs(module, data.X, data.y, data.X_val, data.y_val, cfg, on_epoch=on_epoch)


def _tune_trainable(config: dict[str, Any], spec: Any = None, fit_df: Any = None, val_df: Any = None) -> None:
    from ray import tune

    run_trial(config, spec, fit_df, val_df, tune.report)


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def best_of(rows: list[TrialRow], mode: str) -> TrialRow | None:
    scored = [r for r in rows if r.metric is not None]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored, key=lambda r: r.metric)


class TrialLog(Callback):
    """A Ray Tune callback (runs in the driver) that logs every trial as an MLflow child run of
    ``parent_run_id``; a trial that ends with fewer than ``max_reports`` reports was stopped
    early (ASHA). ``on_update(rows)`` after every change (the live table)."""

    def __init__(self, client: Any, experiment_id: str, parent_run_id: str, metric: str, max_reports: int,
                 on_update: Callable[[list[TrialRow]], None]) -> None:
        self.client, self.experiment_id, self.parent_run_id = client, experiment_id, parent_run_id
        self.metric, self.max_reports, self.on_update = metric, max_reports, on_update
        self.rows: dict[str, TrialRow] = {}
        self.first_report: float | None = None  # when the first trial result arrived (time.time())

    def __getstate__(self) -> dict:
        # Tune pickles its run config into the experiment's folder (for Tuner.restore); the live
        # tracking client and the table stay in this process.
        return {"rows": {}, "client": None, "on_update": lambda rows: None, "first_report": None,
                **{k: getattr(self, k) for k in ("experiment_id", "parent_run_id", "metric", "max_reports")}}

    def _row(self, trial: Any) -> TrialRow:
        from mlflow.entities import Param

        row = self.rows.get(trial.trial_id)
        if row is None:
            row = self.rows[trial.trial_id] = TrialRow(trial.trial_id, plain(trial.config))
            run = self.client.create_run(self.experiment_id, run_name=f"trial-{trial.trial_id}",
                                         tags={"mlflow.parentRunId": self.parent_run_id,
                                               "loopml.trial_id": trial.trial_id, "mlflow.source.name": "loopml tune"})
            row.run_id = run.info.run_id
            self.client.log_batch(row.run_id, params=[Param(k, str(v)[:500]) for k, v in row.config.items()])
        return row

    def _changed(self, row: TrialRow, status: str) -> None:
        row.status = status
        self.on_update(list(self.rows.values()))

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._changed(self._row(trial), "RUNNING")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        from mlflow.entities import Metric

        row = self._row(trial)
        row.reports += 1
        self.first_report = self.first_report or time.time()
        row.metric = _finite(result.get(self.metric))
        ts = int(time.time() * 1000)
        step = int(result.get("training_iteration", row.reports)) - 1
        values = {k: _finite(v) for k, v in result.items() if k in LOGGED}
        metrics = [Metric(k, v, ts, step) for k, v in values.items() if v is not None]
        if metrics:
            self.client.log_batch(row.run_id, metrics=metrics)
        self._changed(row, "RUNNING")

    def _end(self, trial: Any, status: str) -> None:
        row = self._row(trial)
        stopped = status == "FINISHED" and row.reports < self.max_reports
        self.client.set_terminated(row.run_id, status="FAILED" if status == "ERROR" else "FINISHED")
        if stopped:
            self.client.set_tag(row.run_id, "loopml.trial_stopped_early", "true")
        self._changed(row, "STOPPED" if stopped else status)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "ERROR")


def run_tuning(spec: Any, train: pd.DataFrame, workspace: Any, registry: Any, parent: Any,
               on_update: Callable[[list[TrialRow]], None] = lambda rows: None) -> TuneOutcome:
    """Run ``spec.tuning`` on Ray Tune (a local Ray unless ``training.ray_address`` /
    ``LOOPML_RAY_ADDRESS``); every trial becomes a child run of ``parent`` (a TrackedRun)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    from loopml.train.ray_backend import ray_session

    metric, mode = metric_and_mode(spec)
    t = spec.tuning
    epochs = spec.model.epochs if spec.model.kind == "torch" else 1
    fit_df, val_df = tuning_split(spec, train)
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=epochs, grace_period=1, reduction_factor=2)
                 if t.scheduler == "asha" and epochs > 1 else FIFOScheduler())
    log = TrialLog(registry.client, parent.experiment_id, parent.run_id, metric, epochs, on_update)
    parent.log_params({f"search.{k}": v.model_dump(exclude_none=True) for k, v in t.search_space.items()}
                      | {"num_samples": t.num_samples, "metric": metric, "mode": mode, "scheduler": t.scheduler})
    # Tune's newer console output prints its experiment banner even at verbose=0, into stdout,
    # between our live table and --json; the classic reporter is silent at verbose=0.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    started = time.time()
    with ray_session(spec):
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(_tune_trainable, spec=spec, fit_df=fit_df, val_df=val_df),
                                {"cpu": 1}),
            param_space=param_space(spec),
            # random search seeded by data.split.seed: the same spec samples the same configurations
            tune_config=tune.TuneConfig(metric=metric, mode=mode, num_samples=t.num_samples, scheduler=scheduler,
                                        search_alg=BasicVariantGenerator(random_state=spec.data.split.seed),
                                        max_concurrent_trials=t.max_concurrent,
                                        # a trial's process is kept for the next one: a new worker
                                        # imports pandas, scikit-learn, torch again (seconds each)
                                        reuse_actors=True),
            run_config=tune.RunConfig(name=f"{spec.name}-tune-{parent.run_id}",
                                      storage_path=str(workspace.artifacts / "ray-tune"), callbacks=[log],
                                      verbose=0))
        tuner.fit()
    rows = list(log.rows.values())
    best = best_of(rows, mode)
    outcome = TuneOutcome(metric, mode, rows, best, time.time() - started,
                          finished=sum(r.status in ("FINISHED", "STOPPED") for r in rows),
                          first_report_s=log.first_report - started if log.first_report else None)
    parent.log_metrics({"trials": len(rows), "trials_finished": outcome.finished, "tune_seconds": outcome.seconds,
                        **({f"best_{metric}": best.metric} if best else {})})
    if best is not None:
        parent.log_params({f"best.{k}": v for k, v in best.config.items()})
        parent.set_tags({"loopml.best_trial_run": best.run_id})
    return outcome
