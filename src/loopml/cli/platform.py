"""``loopml platform up|status|env|down``: a local scaled-out platform on real engines.

Progress and tables go to stderr and the ``export`` lines to stdout, so
``eval "$(loopml platform up)"`` configures the shell. No secret is printed: the S3 secret
key is exported as ``$(cat FILE)`` and PostgreSQL's password through ``PGPASSFILE``.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Run PostgreSQL, SeaweedFS (S3), MLflow, Prometheus and Alertmanager on 127.0.0.1.",
                  no_args_is_help=True)
err = Console(stderr=True, log_path=False)

DirOpt = Annotated[Path, typer.Option("--dir", envvar="LOOPML_PLATFORM_DIR",
                                      help="Folder the platform owns (data, logs, secrets).")]
DEFAULT_DIR = Path(".loopml-platform")


def _platform(folder: Path, *, must_exist: bool = True):
    from loopml.errors import PlatformNotStarted
    from loopml.platform.stack import Platform

    plat = Platform(folder)
    if must_exist and not plat.state_file.exists():
        raise PlatformNotStarted(str(folder))
    return plat


def _exports(plat) -> list[str]:
    from loopml.platform.stack import BUCKET

    lines = []
    # the workspace on the bucket too: with these lines every loopml command runs on the platform
    for key, value in {"LOOPML_HOME": f"s3://{BUCKET}/home", **plat.environment()}.items():
        # the secret is a command substitution the shell must run, so it is double-quoted
        quoted = f'"{value}"' if value.startswith("$(") else shlex.quote(value)
        lines.append(f"export {key}={quoted}")
    return lines


def _table(rows, title: str) -> Table:
    t = Table(title=title)
    for col in ("component", "pid", "URL", "healthy"):
        t.add_column(col)
    for r in rows:
        t.add_row(r.name, str(r.pid or "-"), r.url or "-", "[green]yes[/]" if r.healthy else "[red]no[/]")
    return t


@app.command()
def up(folder: DirOpt = DEFAULT_DIR,
       project: Annotated[Optional[Path], typer.Option("--project", "-p", help="Project whose monitoring.alerts "
                                                       "Prometheus loads (default: loopml's drift rules).")] = None,
       alert_webhook: Annotated[Optional[str], typer.Option(help="URL Alertmanager sends alerts to (e.g. the "
                                                            "controller's trigger webhook).")] = None,
       alert_webhook_token_file: Annotated[Optional[Path], typer.Option(
           exists=True, dir_okay=False, help="File holding the bearer token for --alert-webhook.")] = None,
       scrape: Annotated[Optional[list[str]], typer.Option(
           "--scrape", help="HOST:PORT whose /metrics Prometheus scrapes (repeatable): loopml servers, and the "
                            "controller's webhook listener, which serves its drift gauges.")] = None) -> None:
    """Start every engine that is not running (a second `up` restarts only what died) and print
    the environment that points loopml at them."""
    from loopml.errors import LoopmlError

    for target in scrape or []:
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise LoopmlError(f"--scrape {target!r}: expected HOST:PORT, e.g. 127.0.0.1:9099")
    from loopml.monitor.service import load_rules, try_load_spec

    rules = load_rules(try_load_spec(project)) if project is not None else None
    plat = _platform(folder, must_exist=False)
    t0 = time.monotonic()
    with err.status("starting the platform") as live:
        def progress(name: str, what: str) -> None:
            live.update(f"{name}: {what}")
            if what in ("healthy", "running"):
                err.log(f"{name:<12} {what} ({time.monotonic() - t0:.1f} s)")

        rows = plat.up(progress=progress, rules=rules)
        if alert_webhook:
            live.update("alertmanager: webhook")
            plat.set_alert_webhook(alert_webhook, alert_webhook_token_file)
        if scrape:
            plat.add_scrape_targets("cli", list(scrape))
    err.print(_table(rows, f"loopml platform in {plat.root}"))
    if all(r.action == "running" for r in rows):
        err.print("already running; nothing started")
    else:
        err.print(f"up in {time.monotonic() - t0:.1f} s; stop with: loopml platform down --dir {shlex.quote(str(folder))}")
    for line in _exports(plat):
        typer.echo(line)


@app.command()
def status(folder: DirOpt = DEFAULT_DIR,
           as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False) -> None:
    """Each component's pid, URL and health; exit 1 when any is not healthy."""
    plat = _platform(folder)
    rows = plat.status()
    if as_json:
        typer.echo(json.dumps([{"component": r.name, "pid": r.pid, "url": r.url, "healthy": r.healthy} for r in rows]))
    else:
        Console(log_path=False).print(_table(rows, f"loopml platform in {plat.root}"))
    if not all(r.healthy for r in rows):
        raise typer.Exit(1)


@app.command()
def env(folder: DirOpt = DEFAULT_DIR) -> None:
    """Print the ``export`` lines again (for another shell)."""
    for line in _exports(_platform(folder)):
        typer.echo(line)


@app.command()
def down(folder: DirOpt = DEFAULT_DIR) -> None:
    """Stop every engine (nothing is left running); data stays in the folder for the next `up`."""
    plat = _platform(folder, must_exist=False)
    with err.status("stopping the platform") as live:
        stopped = plat.down(progress=lambda name, what: live.update(f"{name}: {what}"))
    err.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
