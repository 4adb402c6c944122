"""Options every command shares, and the one place the CLI turns them into objects."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from loopml.config import Workspace

HomeOpt = Annotated[
    Optional[Path],
    typer.Option("--home", envvar="LOOPML_HOME", help="Workspace folder (default ./.loopml)."),
]
TrackingOpt = Annotated[
    Optional[str],
    typer.Option("--tracking-uri", envvar="LOOPML_TRACKING_URI", help="Remote MLflow tracking server instead of the workspace's SQLite."),
]
ProjectOpt = Annotated[
    Path,
    typer.Option("--project", "-p", help="Project folder holding loopml.yaml."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def workspace(home: Optional[Path] = None, tracking_uri: Optional[str] = None) -> Workspace:
    """The workspace for a command, created on first use."""
    return Workspace.from_env(home, tracking_uri).init()
