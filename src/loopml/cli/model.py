"""Model lifecycle commands: run, train, evaluate, promote, rollback, history, models."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from loopml.cli.common import HomeOpt, JsonOpt, ProjectOpt, TrackingOpt, authorize, workspace

console = Console(log_path=False)


def _progress_pipeline(spec, ws, project: Path, **kw):
    from loopml.loop.pipeline import run_pipeline

    with Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[step]:<9}[/] {task.description}"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task("starting", step="pipeline")

        def on_step(step: str, message: str) -> None:
            progress.update(task, description=message, step=step)
            progress.console.log(f"[dim]{step}[/]: {message}")

        result = run_pipeline(spec, ws, project_dir=project, on_step=on_step, **kw)
        progress.update(task, description="done", step="pipeline")
    return result


def _print_result(result, as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(result.to_dict(), default=str))
        return
    table = Table(title=f"{result.model} version {result.version}" + (" (cached)" if result.cached else ""))
    table.add_column("metric")
    table.add_column("candidate", justify="right")
    table.add_column(f"champion v{result.champion_version}" if result.champion_version else "champion", justify="right")
    for k, v in result.metrics.items():
        c = (result.champion_metrics or {}).get(k)
        table.add_row(k, f"{v:.4f}", f"{c:.4f}" if c is not None else "-")
    console.print(table)
    for reason in result.gate_reasons:
        console.print(f"  gate: {reason}")
    verdict = "[green]promoted to champion[/]" if result.promoted else "[yellow]registered as challenger, not promoted[/]"
    console.print(f"version {result.version}: {verdict}")


def run(project: ProjectOpt = Path("."), home: HomeOpt = None, tracking_uri: TrackingOpt = None,
        source: Annotated[Optional[str], typer.Option(help="Data file or URL instead of the spec's data.source.")] = None,
        force: Annotated[bool, typer.Option("--force", help="Ignore the cache and retrain.")] = False,
        as_json: JsonOpt = False) -> None:
    """Snapshot -> validate -> train -> evaluate -> gate/register (cached by content)."""
    from loopml.spec import load_spec

    spec = load_spec(project)
    result = _progress_pipeline(spec, workspace(home, tracking_uri), project, source=source, force=force)
    _print_result(result, as_json)


def train(project: ProjectOpt = Path("."), home: HomeOpt = None, tracking_uri: TrackingOpt = None,
          source: Annotated[Optional[str], typer.Option(help="Data file or URL instead of the spec's data.source.")] = None,
          as_json: JsonOpt = False) -> None:
    """Train, evaluate and register a new version as challenger, without promoting it."""
    from loopml.spec import load_spec

    spec = load_spec(project)
    result = _progress_pipeline(spec, workspace(home, tracking_uri), project, source=source, force=True,
                                auto_promote=False, reason="loopml train")
    _print_result(result, as_json)


def evaluate(model: Annotated[str, typer.Argument(help="NAME[@ALIAS|/VERSION] (default alias champion).")],
             project: ProjectOpt = Path("."), home: HomeOpt = None, tracking_uri: TrackingOpt = None,
             source: Annotated[Optional[str], typer.Option(help="Labelled data instead of the spec's data.source.")] = None,
             as_json: JsonOpt = False) -> None:
    """Metrics of a registered version on the spec's holdout split (and per slice)."""
    from loopml.data.source import read_table
    from loopml.evaluate.metrics import slice_metrics, task_metrics
    from loopml.registry.client import Registry, parse_model_ref
    from loopml.spec import load_spec
    from loopml.train.trainer import coerce_features, feature_kinds, split_frame

    spec = load_spec(project)
    reg = Registry(workspace(home, tracking_uri))
    ref = reg.resolve(*parse_model_ref(model))
    native = reg.load_native(ref)
    df = read_table(source or spec.data.source, base_dir=project)
    holdout = split_frame(spec, df).test
    features = list(getattr(native, "feature_names_in_", spec.feature_columns(list(df.columns))))
    numeric, categorical = feature_kinds(holdout, features)
    X = coerce_features(holdout[features], numeric, categorical)
    y = holdout[spec.data.target]
    metrics = task_metrics(spec.task, native, X, y)
    slices = slice_metrics(spec.task, native, X, y, holdout, spec.evaluation.slices)
    if as_json:
        console.print_json(json.dumps({"model": ref.name, "version": ref.version, "metrics": metrics, "slices": slices}))
        return
    table = Table(title=f"{ref.name} version {ref.version} on {len(holdout)} holdout rows")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4f}")
    console.print(table)
    for col, values in slices.items():
        for value, m in values.items():
            console.print(f"  slice {col}={value}: " + ", ".join(f"{k}={v:.3f}" for k, v in m.items()))


def promote(name: Annotated[str, typer.Argument(help="Registered model name.")],
            version: Annotated[str, typer.Argument(help="Version number to make champion.")],
            reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the audit log).")] = "manual promotion",
            allow_unsafe_pickle: Annotated[bool, typer.Option(
                "--allow-unsafe-pickle", help="Load a version stored with pickle/cloudpickle, which runs arbitrary "
                "code; only for a model whose author you trust (also LOOPML_ALLOW_UNSAFE_PICKLE=1).")] = False,
            home: HomeOpt = None, tracking_uri: TrackingOpt = None) -> None:
    """Make VERSION the champion of NAME, after loading it and predicting on its input example;
    a promotion by hand also lifts a rollback's block on VERSION."""
    from loopml.registry.client import Registry

    ws = workspace(home, tracking_uri)
    authorize(ws, "deployer", f"promoting {name}")
    reg = Registry(ws, allow_unsafe_pickle=True if allow_unsafe_pickle else None)
    change = reg.promote(name, version, reason)
    console.print(f"{name}: champion {change.previous or '-'} -> {change.version} (by {change.who})")


def rollback(name: Annotated[str, typer.Argument(help="Registered model name.")],
             reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the audit log).")] = "manual rollback",
             home: HomeOpt = None, tracking_uri: TrackingOpt = None) -> None:
    """Point NAME's champion back at the previous champion; the version rolled back from is blocked
    from automatic rollout until promoted by hand."""
    from loopml.registry.client import Registry

    ws = workspace(home, tracking_uri)
    authorize(ws, "deployer", f"rolling back {name}")
    change = Registry(ws).rollback(name, reason)
    console.print(f"{name}: champion rolled back {change.previous} -> {change.version}")


def history(name: Annotated[str, typer.Argument(help="Registered model name.")],
            home: HomeOpt = None, tracking_uri: TrackingOpt = None, as_json: JsonOpt = False) -> None:
    """Every alias change of NAME: who, when, why."""
    from loopml.errors import ModelNotFound
    from loopml.registry.client import Registry

    reg = Registry(workspace(home, tracking_uri))
    changes = reg.history(name)
    if not changes and not reg.versions(name):
        raise ModelNotFound(name)
    if as_json:
        console.print_json(json.dumps([c.to_dict() for c in changes]))
        return
    table = Table(title=f"alias history of {name}")
    for col in ("when (UTC)", "alias", "from", "to", "action", "who", "why"):
        table.add_column(col, overflow="fold")
    for c in changes:
        table.add_row(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(c.ts)), c.alias, c.previous or "-",
                      c.version or "-", c.action, c.who, c.why)
    console.print(table)


def models(home: HomeOpt = None, tracking_uri: TrackingOpt = None) -> None:
    """Registered models, their versions and aliases."""
    from loopml.registry.client import Registry

    reg = Registry(workspace(home, tracking_uri))
    table = Table(title="registered models")
    for col in ("model", "version", "aliases", "snapshot"):
        table.add_column(col)
    for rm in reg.client.search_registered_models():
        for v in reg.versions(rm.name):
            table.add_row(v.name, v.version, ",".join(v.aliases), v.tags.get("loopml.snapshot_id", ""))
    console.print(table)


def register(app: typer.Typer) -> None:
    for fn in (run, train, evaluate, promote, rollback, history, models):
        app.command(fn.__name__)(fn)
