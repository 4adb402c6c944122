"""The ``loopml`` command: thin shells over the library.

A :class:`~loopml.errors.LoopmlError` is printed on one line and the process exits with
its ``exit_code`` (2 for bad input, 1 for a failed data contract); ``--debug`` anywhere on
the command line shows the traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from loopml.cli.common import HomeOpt, TrackingOpt, workspace

app = typer.Typer(name="loopml", help="The whole ML lifecycle as one closed loop.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
console = Console(log_path=False)
err_console = Console(stderr=True)


def _mount() -> None:
    """Attach the sub-command groups owned by their own modules (imported lazily at start)."""
    from loopml.cli import loop as loop_cli
    from loopml.cli import model as model_cli

    model_cli.register(app)
    loop_cli.register(app)
    from loopml.cli.predict import predict as predict_cmd

    app.command("predict")(predict_cmd)
    from loopml.cli.optimize import optimize as optimize_cmd

    app.command("optimize")(optimize_cmd)
    import importlib.util

    if importlib.util.find_spec("kopf"):  # `loopml operator` needs the k8s extra; kopf is imported when it runs
        from loopml.cli.operator import operator as operator_cmd

        app.command("operator")(operator_cmd)
    try:  # `loopml tune` needs the ray extra only when it runs; the module itself is light
        from loopml.cli.tune import tune as tune_cmd
    except ImportError:
        tune_cmd = None
    if tune_cmd is not None:
        app.command("tune")(tune_cmd)
    for module, name in (("loopml.cli.data", "data"), ("loopml.cli.monitor", "monitor"), ("loopml.cli.platform", "platform"),
                         ("loopml.cli.deploy", "deploy"), ("loopml.cli.token", "token")):
        try:
            sub = __import__(module, fromlist=["app"])
        except ImportError:
            continue
        app.add_typer(sub.app, name=name, help=(sub.app.info.help or f"{name} commands"))
    try:
        from loopml.cli import serve as serve_cli
    except ImportError:
        return
    app.command("serve", help="Serve registered models over OIP v2 and the MLflow scoring protocol.")(serve_cli.serve)
    if hasattr(serve_cli, "traffic_app"):
        app.add_typer(serve_cli.traffic_app, name="traffic", help="Show or change an endpoint's traffic policy.")


@app.command()
def init(home: HomeOpt = None, tracking_uri: TrackingOpt = None) -> None:
    """Create the workspace (MLflow on SQLite, artifacts, snapshots, prediction log)."""
    ws = workspace(home, tracking_uri)
    from loopml.registry.client import Registry

    Registry(ws).client.search_registered_models(max_results=1)  # creates the MLflow schema
    console.print(f"workspace ready at [bold]{ws.home}[/] (tracking: {ws.tracking_uri})")


@app.command()
def new(name: Annotated[str, typer.Argument(help="Project folder to create.")],
        rows: Annotated[int, typer.Option(help="Rows of example data to generate.")] = 5000) -> None:
    """Scaffold a working example project: loopml.yaml plus generated data."""
    from loopml.demo.project import scaffold_project

    folder = scaffold_project(Path(name), rows=rows)
    console.print(f"created [bold]{folder}[/]; next: cd {folder} && loopml run")


@app.command()
def demo(home: Annotated[Optional[Path], typer.Option(
             "--home", help="The demo's own workspace (default ./.loopml-demo; never LOOPML_HOME), wiped at each "
                            "run: a new or empty folder, or one an earlier demo created.")] = None,
         keep_server: Annotated[bool, typer.Option(help="Leave nothing running (default) or keep serving.")] = False) -> None:
    """Run the whole loop on generated card-transaction data, end to end, in a clean demo workspace."""
    from loopml.demo.run import DEFAULT_HOME, fresh_demo_workspace, run_demo

    run_demo(fresh_demo_workspace(home or DEFAULT_HOME), console=console)


def _quiet_mlflow() -> None:
    """A command prints one line per problem; MLflow's INFO logs (schema creation), its
    warnings and GitPython's probing are noise there. Done at the command's start-up only:
    the library leaves the process's loggers and warning filters alone."""
    import logging
    import os
    import warnings

    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    # MLflow draws a tqdm bar per artifact download whenever tqdm is importable (the text
    # extra brings it): on stderr that buries the one error line. loopml shows its own progress.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow(\..*)?")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"mlflow(\..*)?")
    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main() -> None:
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    _quiet_mlflow()
    _mount()
    from loopml.errors import LoopmlError

    try:
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except LoopmlError as exc:
        if debug:
            raise
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors and anything unexpected
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # click's usage errors
            ctx = getattr(exc, "ctx", None)
            where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            err_console.print(f"error: {exc.format_message()}{where}", markup=False, highlight=False, soft_wrap=True)
            sys.exit(2)
        if debug:
            raise
        err_console.print(f"error: {type(exc).__name__}: {exc} (run again with --debug for the traceback)",
                          markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
