"""``loopml token create|list|revoke``: named API tokens with roles, in the state store.

Whoever can write the state store (``LOOPML_STATE_URI``, or the workspace's SQLite file) can
manage tokens: these commands talk to the store, not to a server. A token is printed once, on
stdout, and never again (the store holds only a salted hash: :mod:`loopml.store.tokens`).

Also the one place the CLI reads a token to *send*: :func:`read_token` (``--token-file`` or the
environment, never an argument: argv is readable by every user through ``ps`` and ``/proc``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from loopml.cli.common import HomeOpt, JsonOpt, workspace

app = typer.Typer(help="Create, list or revoke named API tokens (roles: viewer, deployer, admin).",
                  no_args_is_help=True)

TokenFileOpt = Annotated[Optional[Path], typer.Option(
    "--token-file", help="File holding the bearer token (default: $LOOPML_TOKEN, else $LOOPML_ADMIN_TOKEN).")]
# kept only to say where the token goes instead; hidden from --help
ArgvTokenOpt = Annotated[Optional[str], typer.Option("--token", hidden=True)]


def read_token(token_file: Optional[Path], argv_token: Optional[str] = None) -> Optional[str]:
    """The token to send: the file's content, else ``$LOOPML_TOKEN``, else ``$LOOPML_ADMIN_TOKEN``."""
    from loopml.errors import TokenError

    if argv_token is not None:
        raise TokenError("--token: a token on the command line is visible to every user (ps, /proc); "
                         "put it in a file (--token-file PATH, mode 600) or in $LOOPML_TOKEN")
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise TokenError(f"--token-file {token_file}: cannot read it ({exc.strerror}); "
                             "give a readable file holding the token") from None
        if not token:
            raise TokenError(f"--token-file {token_file}: the file is empty; write the token into it")
        return token
    return os.environ.get("LOOPML_TOKEN") or os.environ.get("LOOPML_ADMIN_TOKEN") or None


def _store(home, action: str):
    from loopml.cli.common import authorize
    from loopml.store.tokens import TokenStore

    ws = workspace(home)
    authorize(ws, "admin", action)  # on a shared store; the first admin token needs $LOOPML_ADMIN_TOKEN
    return TokenStore(ws.state_uri)


@app.command("create")
def create(name: Annotated[str, typer.Argument(help="A name for who or what uses the token (audit logs show it).")],
           role: Annotated[str, typer.Option("--role", help="viewer, deployer or admin.")] = "viewer",
           home: HomeOpt = None) -> None:
    """Create a token and print it once, on stdout (store it now: it cannot be shown again)."""
    from loopml.store.tokens import check_name, check_role

    check_name(name)
    check_role(role)  # before the workspace: a typo costs nothing
    token = _store(home, "token management").create(name, role)
    typer.echo(token)
    typer.echo(f"token {name!r} ({role}) created; it is shown only now", err=True)


@app.command("list")
def list_tokens(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Names, roles, when created and last used (never the tokens)."""
    rows = _store(home, "token management").list()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no tokens (create one with 'loopml token create NAME --role ROLE')")
        return
    typer.echo(f"{'NAME':24} {'ROLE':9} {'CREATED':20} LAST USED")
    for r in rows:
        typer.echo(f"{r['name']:24} {r['role']:9} {_when(r['created']):20} {_when(r['last_used'])}")


@app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="The token's name.")], home: HomeOpt = None) -> None:
    """Delete a token; servers and the controller refuse it within a few seconds (their cache)."""
    from loopml.store.tokens import CACHE_TTL_S

    _store(home, "token management").revoke(name)
    typer.echo(f"token {name!r} revoked (refused everywhere within {CACHE_TTL_S:g} s)")


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
