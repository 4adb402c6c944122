"""The ``tuning:`` section beyond its schema: search-space names and ranges checked against the
model they tune, the metric and its direction, Ray Tune's domains, and a spec with one trial's
configuration applied. No heavy imports at module level: ``loopml.spec`` calls
:func:`check_tuning` while loading.
"""

from __future__ import annotations

import difflib
from typing import Any

from loopml.errors import SpecError
from loopml.evaluate.names import TASK_METRICS, higher_is_better

# torch loop settings a search space may name (the rest are the module's own params)
TORCH_LOOP_KEYS = ("lr", "weight_decay", "batch_size", "optimizer")


def metric_and_mode(spec: Any) -> tuple[str, str]:
    """The metric trials are ranked by and whether higher ('max') or lower ('min') wins."""
    t = spec.tuning
    metric = t.metric or spec.evaluation.primary_metric
    return metric, t.mode or ("max" if higher_is_better(metric) else "min")


def edge_values(dim: Any) -> list[Any]:
    """The values a dimension can reach at its ends (randint's high is exclusive)."""
    if dim.type == "choice":
        return list(dim.values)
    if dim.type == "randint":
        return [int(dim.low), int(dim.high) - 1]
    return [float(dim.low), float(dim.high)]


def check_tuning(spec: Any, source: str) -> None:
    """Raise :class:`SpecError` naming the ``tuning.*`` field that cannot work: a metric the task
    does not compute, a mode against the metric's direction, a parameter the model does not
    take, or a range end the model rejects."""
    t, task = spec.tuning, spec.task
    metric = t.metric or spec.evaluation.primary_metric
    known = TASK_METRICS[task]
    if metric not in known:
        hint = difflib.get_close_matches(metric, list(known), n=1)
        raise SpecError(source, f"tuning.metric: '{metric}' is not a {task} metric; use one of {', '.join(known)}"
                                + (f"; did you mean '{hint[0]}'?" if hint else ""))
    natural = "max" if higher_is_better(metric) else "min"
    if t.mode is not None and t.mode != natural:
        raise SpecError(source, f"tuning.mode: '{t.mode}' would pick the worst trials: {metric} is better when "
                                f"{'higher' if natural == 'max' else 'lower'}; use mode: {natural} or leave it out")
    for name, dim in t.search_space.items():
        for value in edge_values(dim):
            _check_value(spec, name, value, source)


def _check_value(spec: Any, name: str, value: Any, source: str) -> None:
    field = f"tuning.search_space.{name}"
    if spec.model.kind == "torch" and name in TORCH_LOOP_KEYS:
        from pydantic import ValidationError

        from loopml.spec import ModelSpec

        try:
            ModelSpec.model_validate({**spec.model.model_dump(), name: value})
        except ValidationError as exc:
            raise SpecError(source, f"{field}: value {value!r}: {exc.errors()[0]['msg']}") from None
        return
    try:
        if spec.model.kind == "torch":
            from loopml.train.torch_trainer import build_module

            build_module(spec.model.module, 4, 2, {**spec.model.params, name: value}, source=source)
        else:
            from loopml.train.estimator import build_estimator

            build_estimator(spec.model.estimator, {**spec.model.params, name: value}, source=source)
    except SpecError as exc:
        why = "; ".join(p.removeprefix(f"model.params.{name}: ").removeprefix("model.params: ") for p in exc.problems)
        extra = f" (or one of {', '.join(TORCH_LOOP_KEYS)})" if spec.model.kind == "torch" and "has no parameter" in why else ""
        raise SpecError(source, f"{field}: value {value!r}: {why}{extra}") from None


def param_space(spec: Any) -> dict[str, Any]:
    """The search space as Ray Tune domains."""
    from ray import tune

    out: dict[str, Any] = {}
    for name, d in spec.tuning.search_space.items():
        if d.type == "choice":
            out[name] = tune.choice(list(d.values))
        elif d.type == "randint":
            out[name] = tune.randint(int(d.low), int(d.high))
        else:
            out[name] = getattr(tune, d.type)(float(d.low), float(d.high))
    return out


def plain(config: dict[str, Any]) -> dict[str, Any]:
    """numpy scalars -> Python numbers (for YAML, JSON and the estimator's own checks)."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in config.items()}


def tuned_spec(spec: Any, config: dict[str, Any]) -> Any:
    """A copy of ``spec`` with one configuration applied: torch loop settings to ``model.*``,
    everything else to ``model.params``; validated like a spec read from the file."""
    from loopml.spec import ProjectSpec

    raw = spec.model_dump(exclude_unset=True)
    model = raw.setdefault("model", {})
    params = dict(model.get("params") or {})
    for k, v in plain(config).items():
        if spec.model.kind == "torch" and k in TORCH_LOOP_KEYS:
            model[k] = v
        else:
            params[k] = v
    model["params"] = params
    return ProjectSpec.model_validate(raw)
