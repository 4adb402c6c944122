"""``loopml monitor``: drift, delayed labels, the HTML report and alerts (thin shells)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from loopml.cli.common import HomeOpt, JsonOpt, ProjectOpt, TrackingOpt, workspace

app = typer.Typer(help="Watch served models: drift, data quality, live metrics, alerts, reports.",
                  no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Watch served models: drift, data quality, live metrics, alerts, reports."""

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="NAME, NAME@ALIAS or NAME/VERSION (default alias: champion).")]
WindowOpt = Annotated[Optional[int], typer.Option("--window", "-w", help="Check the last N logged rows (default: monitoring.window).")]
SinceOpt = Annotated[Optional[str], typer.Option("--since", help="Start of the window: a duration ago (2h), ISO time or epoch seconds.")]
UntilOpt = Annotated[Optional[str], typer.Option("--until", help="End of the window (same forms as --since).")]


def _console():
    from rich.console import Console

    return Console()


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    if x != 0 and abs(x) < 10 ** -digits:
        return f"{x:.1e}"
    return f"{x:.{digits}f}"


def _drift_table(report, title: str):
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col in ("feature", "method", "statistic", "p-value", "q-value", "verdict"):
        t.add_column(col, justify="right" if col in ("statistic", "p-value", "q-value") else "left",
                     no_wrap=col != "verdict")
    for f in sorted(report.features, key=lambda f: (not f.drifted, not f.ok, f.name)):
        if f.drifted:
            verdict = "[bold red]DRIFT[/]"
        else:
            verdict = "[green]ok[/]" if f.ok else f"[yellow]{f.status}[/]"
        if f.unseen:
            verdict += f" [dim](unseen: {', '.join(list(f.unseen)[:5])})[/]"
        t.add_row(f.name, f.method, _fmt(f.statistic), _fmt(f.p_value), _fmt(f.q_value), verdict)
    return t


def _when(text) -> str:
    return str(text)[:19] if text else "?"


@app.command()
def drift(
    model: ModelOpt,
    window: WindowOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    segment: Annotated[Optional[str], typer.Option(help="Also report drift per value of this column.")] = None,
    fail_on_drift: Annotated[bool, typer.Option("--fail-on-drift", help="Exit with code 1 when drift is found.")] = False,
    project: ProjectOpt = Path("."),
    home: HomeOpt = None,
    tracking_uri: TrackingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare a window of the prediction log with the model's training reference profile."""
    from loopml.monitor.service import check_model_drift, try_load_spec
    from loopml.monitor.windows import parse_time

    ws = workspace(home, tracking_uri)
    spec = try_load_spec(project)
    report = check_model_drift(ws, model, spec=spec, last=window,
                               since=parse_time(since) if since else None,
                               until=parse_time(until) if until else None, segment=segment)
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
    else:
        console = _console()
        w = report.window
        console.print(_drift_table(report, f"input drift: {report.model} v{report.version}, "
                                           f"{w.get('rows', report.n_current):,} rows ({_when(w.get('start'))} .. {_when(w.get('end'))}) "
                                           f"vs {report.n_reference:,} reference rows"))
        if report.outputs is not None and report.outputs.features:
            console.print(_drift_table(report.outputs, "prediction drift"))
        if report.missing_columns:
            console.print(f"[dim]reference columns not in the log (target, ids...): {', '.join(report.missing_columns)}[/]")
        for seg, r in (w.get("segments") or {}).items():
            console.print(f"segment {seg}: {'[bold red]DRIFT[/]' if r['drifted'] else '[green]no drift[/]'} ({r['rule']})")
        verdict = "[bold red]DRIFT DETECTED[/]" if report.drifted else "[bold green]NO DRIFT[/]"
        console.print(f"{verdict}  decided by {report.decided_by}: {report.rule}")
    if fail_on_drift and report.drifted:
        raise typer.Exit(1)
