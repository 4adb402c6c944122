"""``loopml data``: snapshot a dataset and validate it against the project's contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from loopml.cli.common import HomeOpt, JsonOpt, ProjectOpt, TrackingOpt, workspace

app = typer.Typer(help="Snapshot datasets and check them against the data contract.", no_args_is_help=True)

SourceArg = Annotated[
    Optional[str],
    typer.Argument(help="CSV/Parquet path or fsspec URL (default: data.source in loopml.yaml)."),
]
SnapshotArg = Annotated[
    Optional[str],
    typer.Argument(help="Snapshot id or a unique prefix (default: snapshot data.source first)."),
]


@app.command()
def snapshot(
    source: SourceArg = None,
    project: ProjectOpt = Path("."),
    home: HomeOpt = None,
    tracking_uri: TrackingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Store a dataset as an immutable, content-addressed snapshot with its reference profile."""
    from loopml.data.snapshot import snapshot_dataset

    ws = workspace(home, tracking_uri)
    if source is None:
        from loopml.spec import load_spec

        snap = snapshot_dataset(load_spec(project).data.source, ws, base_dir=project)
    else:
        snap = snapshot_dataset(source, ws)
    profile = snap.load_profile()
    if as_json:
        typer.echo(json.dumps({**snap.to_dict(), "profile": profile.to_dict()}, default=str))
        return
    console = _console()
    console.print(f"[bold]{snap.id}[/bold]  {snap.row_count:,} rows  {len(snap.schema)} columns  from {snap.source}")
    console.print(_profile_table(profile))


@app.command()
def validate(
    snapshot_id: SnapshotArg = None,
    project: ProjectOpt = Path("."),
    home: HomeOpt = None,
    tracking_uri: TrackingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a snapshot against the contract in loopml.yaml; exit code 1 when it fails."""
    from loopml.data.contract import contract_for, validate_frame
    from loopml.data.snapshot import load_snapshot, snapshot_dataset
    from loopml.spec import load_spec

    ws = workspace(home, tracking_uri)
    spec = load_spec(project)
    if snapshot_id is None:
        snap = snapshot_dataset(spec.data.source, ws, base_dir=project)
    else:
        snap = load_snapshot(snapshot_id, ws)
    report = validate_frame(snap.load_frame(), contract_for(spec))
    if as_json:
        typer.echo(json.dumps({"snapshot": snap.id, **report.to_dict()}, default=str))
    else:
        _print_report(snap.id, report)
    if not report.passed:
        raise typer.Exit(1)


def _console():
    from rich.console import Console

    return Console()


def _profile_table(profile):
    from rich.table import Table

    table = Table("column", "type", "missing", "summary", box=None, pad_edge=False)
    for name, col in profile.columns.items():
        if col.kind == "numeric":
            if col.min is None:
                summary = "all missing"
            else:
                summary = f"min {col.min:.4g}  median {col.quantiles['p50']:.4g}  max {col.max:.4g}"
        else:
            top = list(col.frequencies.items())[:3]
            summary = ", ".join(f"{k} ({v})" for k, v in top) + (f", +{len(col.frequencies) - 3} more" if len(col.frequencies) > 3 else "")
        table.add_row(name, col.dtype, f"{col.missing_rate:.1%}", summary)
    return table


def _print_report(snapshot_id: str, report) -> None:
    from rich.table import Table

    from loopml.data.contract import format_example

    console = _console()
    if report.passed:
        console.print(f"[green]PASS[/green] {snapshot_id}: {report.summary()}")
        return
    console.print(f"[red]FAIL[/red] {snapshot_id}: {report.summary()}")
    table = Table("column", "rule", "count", "message", "examples")
    for v in report.violations:
        examples = "; ".join(format_example(e, v.column) for e in v.examples)
        table.add_row(v.column or "<table>", v.rule, str(v.count), v.message, examples)
    console.print(table)
