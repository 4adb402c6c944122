"""Roles for the CLI on a shared state store (#11): with LOOPML_STATE_URI=postgresql://...
(a real PostgreSQL), a command that changes what is served or manages tokens needs a token of
the right role in $LOOPML_TOKEN (the bootstrap admin: $LOOPML_ADMIN_TOKEN), and the audit log
names the token; on the embedded default (SQLite) nothing is asked."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from loopml.config import Workspace
from loopml.errors import Forbidden, NotAuthorized
from loopml.loop.state import StateStore

CLI = [sys.executable, "-m", "loopml.cli.main"]


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=120)


def test_retrain_and_tokens_need_their_roles_on_postgresql(pg_url, tmp_path):
    from loopml.demo.project import scaffold_project

    project = scaffold_project(tmp_path / "proj", rows=200)
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    base.update(LOOPML_HOME=str(tmp_path / "ws"), LOOPML_STATE_URI=pg_url)
    store = StateStore(pg_url)

    nobody = _cli(base, "retrain", "-p", str(project))
    assert nobody.returncode == 2 and "needs a token with the deployer role" in nobody.stderr, nobody.stderr
    assert "Traceback" not in nobody.stderr and store.triggers("fraud") == []
    assert _cli(base, "token", "create", "ci", "--role", "deployer").returncode == 2  # admin only
    admin = dict(base, LOOPML_ADMIN_TOKEN="bootstrap-admin-secret")
    made = {}
    for name, role in (("ci", "deployer"), ("dash", "viewer")):
        out = _cli(admin, "token", "create", name, "--role", role)
        assert out.returncode == 0, out.stderr
        made[name] = out.stdout.strip()

    viewer = _cli(dict(base, LOOPML_TOKEN=made["dash"]), "retrain", "-p", str(project))
    assert viewer.returncode == 2 and "needs the deployer role; token 'dash' has viewer" in viewer.stderr
    assert _cli(dict(base, LOOPML_TOKEN=made["ci"]), "token", "list").returncode == 2  # a deployer manages none
    wrong = _cli(dict(base, LOOPML_TOKEN=made["ci"][:-3] + "abc"), "retrain", "-p", str(project))
    assert wrong.returncode == 2 and "not a valid token" in wrong.stderr
    assert store.triggers("fraud") == []

    ok = _cli(dict(base, LOOPML_TOKEN=made["ci"]), "retrain", "-p", str(project), "--reason", "by ci")
    assert ok.returncode == 0, ok.stderr
    assert [t.status for t in store.triggers("fraud")] == ["queued"]
    assert made["ci"] not in ok.stdout + ok.stderr


def test_the_acting_name_is_the_tokens_and_sqlite_asks_nothing(pg_url, tmp_path, monkeypatch):
    from loopml.cli.common import authorize
    from loopml.registry import audit
    from loopml.store.tokens import TokenStore

    local = Workspace(tmp_path / "local").init()
    monkeypatch.delenv("LOOPML_TOKEN", raising=False)
    monkeypatch.delenv("LOOPML_ADMIN_TOKEN", raising=False)
    assert authorize(local, "admin", "anything") is None  # the embedded default: the folder's permissions
    shared = Workspace(tmp_path / "shared", state_uri_override=pg_url).init()
    with pytest.raises(NotAuthorized):
        authorize(shared, "deployer", "promoting fraud")
    monkeypatch.setenv("LOOPML_TOKEN", TokenStore(pg_url).create("dash", "viewer"))
    with pytest.raises(Forbidden):
        authorize(shared, "deployer", "promoting fraud")
    monkeypatch.setenv("LOOPML_TOKEN", TokenStore(pg_url).create("release-bot", "deployer"))
    try:
        assert authorize(shared, "deployer", "promoting fraud") == "release-bot"
        assert audit.current_user() == "release-bot"  # what promote/rollback record as who acted
    finally:
        audit._ACTING.clear()
