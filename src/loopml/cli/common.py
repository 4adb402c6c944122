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


def authorize(ws, needed: str, action: str) -> str | None:
    """On a shared state store (``LOOPML_STATE_URI=postgresql://...``) a command that changes
    what is served, or manages tokens, needs a token with the ``needed`` role, from
    ``$LOOPML_TOKEN`` (else ``$LOOPML_ADMIN_TOKEN``, the bootstrap admin); the audit log then
    records the token's name. On the embedded default (SQLite in the workspace) the folder's
    permissions are the guard and nothing is asked. Returns the acting name, or None."""
    import os

    if not ws.state_uri.startswith(("postgresql", "postgres:")):
        return None
    from loopml.errors import Forbidden, NotAuthorized
    from loopml.registry import audit
    from loopml.store.tokens import Verifier

    token = os.environ.get("LOOPML_TOKEN") or os.environ.get("LOOPML_ADMIN_TOKEN") or None
    who = Verifier(ws.state_uri, os.environ.get("LOOPML_ADMIN_TOKEN"), ttl=0).identify(token)
    if who is None:
        raise NotAuthorized(f"{action} on the shared state store (LOOPML_STATE_URI) needs a token with the {needed} "
                            f"role in $LOOPML_TOKEN ({'it is not a valid token' if token else 'none is set'}; "
                            "an admin creates one with 'loopml token create NAME --role " + needed + "')")
    if not who.allows(needed):
        raise Forbidden(who.name, who.role, needed, action)
    audit.acting_as(who.name)
    return who.name
