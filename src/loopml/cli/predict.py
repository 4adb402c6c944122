"""``loopml predict``: batch prediction of a registered version over a file (see serve/batch.py)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

from loopml.cli.common import HomeOpt, TrackingOpt, workspace

console = Console(stderr=True)


def predict(model: Annotated[str, typer.Option("--model", "-m", help="NAME, NAME@ALIAS or NAME/VERSION.")],
            source: Annotated[str, typer.Argument(metavar="INPUT", help="CSV or Parquet file, path or fsspec URL.")],
            output: Annotated[str, typer.Argument(metavar="OUTPUT", help="Parquet file to write, path or fsspec URL.")],
            chunk_rows: Annotated[int, typer.Option(help="Rows per chunk: bounds memory.")] = 50_000,
            id_column: Annotated[Optional[str], typer.Option(help="Input column copied to the output beside request_id.")] = None,
            keep_inputs: Annotated[bool, typer.Option(help="Copy the model's input columns to the output.")] = False,
            log: Annotated[bool, typer.Option("--log", help="Also write the rows into the prediction log (variant 'batch') for monitoring.")] = False,
            allow_unsafe_pickle: Annotated[bool, typer.Option(
                "--allow-unsafe-pickle", help="Load pickle/cloudpickle model files, which run arbitrary code (UNSAFE).")] = False,
            home: HomeOpt = None, tracking_uri: TrackingOpt = None) -> None:
    """Predict every row of INPUT with a registered model version into the Parquet file OUTPUT."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from loopml.registry.client import Registry, parse_model_ref
    from loopml.serve.batch import predict_file

    ws = workspace(home, tracking_uri)
    reg = Registry(ws, allow_unsafe_pickle=allow_unsafe_pickle or None)
    ref = reg.resolve(*parse_model_ref(model))
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[rows]:,} rows"), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"{ref.name} v{ref.version}", total=1.0, rows=0)

        def advance(rows: int, fraction: float | None) -> None:
            progress.update(task, completed=fraction if fraction is not None else 0.0, rows=rows)

        result = predict_file(reg, ref, source, output, chunk_rows=chunk_rows, id_column=id_column,
                              keep_inputs=keep_inputs, log_root=ws.predictions if log else None, on_progress=advance)
        progress.update(task, completed=1.0)
    logged = f"; {result.logged:,} logged" if log else ""
    console.print(f"{result.rows:,} rows -> {result.output} with {result.model} version {result.version} "
                  f"in {result.seconds:.1f} s ({result.rows_per_second:,.0f} rows/s){logged}")
