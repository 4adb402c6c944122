"""``loopml tune``: the spec's ``tuning:`` on Ray Tune, a live table of trials and the best so
far, then the best configuration through the gate like any challenger.

A thin shell over :func:`loopml.loop.pipeline.tune_pipeline`. A spec without ``tuning:`` is
exit 2 with one line; Ray is imported only when tuning runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from loopml.cli.common import HomeOpt, JsonOpt, ProjectOpt, TrackingOpt, workspace

console = Console(log_path=False)


def trials_table(rows: list, metric: str, mode: str, total: int) -> Table:
    """Every trial (config, status, reports, latest metric) and the best so far in the title."""
    from loopml.train.tune import best_of

    best = best_of(rows, mode)
    done = sum(r.status in ("FINISHED", "STOPPED", "ERROR") for r in rows)
    title = f"trials {done}/{total} done; best {metric} ({mode}): " + (
        f"{best.metric:.4f} (trial {best.trial_id})" if best else "-")
    t = Table(title=title)
    for col in ("trial", "status", "reports", metric, "config"):
        t.add_column(col, overflow="fold")
    for r in rows:
        mark = "[bold green]" if best is not None and r is best else ""
        t.add_row(f"{mark}{r.trial_id}", r.status, str(r.reports),
                  f"{mark}{r.metric:.4f}" if r.metric is not None else "-",
                  ", ".join(f"{k}={_short(v)}" for k, v in r.config.items()))
    return t


def _short(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def tune(project: ProjectOpt = Path("."), home: HomeOpt = None, tracking_uri: TrackingOpt = None,
         as_json: JsonOpt = False) -> None:
    """Tune hyperparameters on Ray Tune (loopml.yaml 'tuning:'); the best goes through the gate."""
    from rich.live import Live

    from loopml.errors import SpecError
    from loopml.loop.pipeline import tune_pipeline
    from loopml.spec import load_spec
    from loopml.train.tune_space import metric_and_mode

    spec = load_spec(project)
    if spec.tuning is None:
        raise SpecError("loopml.yaml", "tuning: missing; add a tuning section with a search_space "
                                       "(e.g. model.params names with {type: loguniform, low, high}) to use loopml tune")
    ws = workspace(home, tracking_uri)
    metric, mode = metric_and_mode(spec)
    total = spec.tuning.num_samples

    live = Live(trials_table([], metric, mode, total), console=console, refresh_per_second=4,
                transient=False) if not as_json else None

    def say(step: str, message: str) -> None:
        if step == "tune" and message.startswith("best") and live is not None:
            live.stop()  # the table's last state stays above the retraining's lines
        if not as_json:
            console.log(f"[bold]{step}[/] {message}", highlight=False)

    def on_trials(rows: list) -> None:
        if live is not None:
            live.update(trials_table(rows, metric, mode, total))

    if live is not None:
        live.start()
    try:
        outcome, result = tune_pipeline(spec, ws, project_dir=project, on_step=say, on_trials=on_trials)
    finally:
        if live is not None:
            live.stop()
    if as_json:
        console.print_json(json.dumps({
            "metric": metric, "mode": mode, "seconds": round(outcome.seconds, 3),
            "trials": [{"trial_id": r.trial_id, "status": r.status, "reports": r.reports, "metric": r.metric,
                        "config": r.config, "run_id": r.run_id} for r in outcome.rows],
            "best": ({"trial_id": outcome.best.trial_id, "metric": outcome.best.metric,
                      "config": outcome.best.config} if outcome.best else None),
            "result": result.to_dict() if result else None}, default=str))
    if result is None:
        from loopml.errors import PipelineStepFailed

        raise PipelineStepFailed("tune", f"no trial reported {metric}; see the trials' MLflow runs")
    if as_json:
        return
    verdict = "[green]passed[/]" if result.gate_passed else "[yellow]failed[/]"
    console.print(f"gate {verdict}: " + "; ".join(result.gate_reasons), highlight=False)
    console.print(f"{spec.name} version {result.version}: "
                  + ("promoted to champion" if result.promoted else "challenger (not promoted)"), highlight=False)
