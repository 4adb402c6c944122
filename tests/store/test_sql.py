"""store/base.py + sql.py: URI -> back end, fail closed, schema version, old state.db files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest
from sqlalchemy import select, update

from loopml.errors import StateStoreUnavailable
from loopml.store import open_store, redact
from loopml.store.base import forget
from loopml.store.schema import VERSION, schema_version
from tests.store.backends import state_uri  # noqa: F401 - fixture: SQLite and PostgreSQL


def test_open_creates_the_schema_and_records_its_version(state_uri):
    store = open_store(state_uri)
    assert store.dialect == state_uri.split(":")[0]
    assert store.run(lambda con: con.execute(select(schema_version.c.version)).scalars().all()) == [VERSION]
    assert open_store(state_uri) is store  # one per process and URI


def test_a_newer_schema_is_refused_not_misread(state_uri):
    open_store(state_uri).run(lambda con: con.execute(update(schema_version).values(version=VERSION + 1)))
    forget(state_uri)
    with pytest.raises(StateStoreUnavailable) as info:
        open_store(state_uri)
    assert f"schema version {VERSION + 1} is newer" in str(info.value) and "upgrade loopml" in str(info.value)


@pytest.mark.parametrize("uri, says", [
    ("mysql://u:pw@127.0.0.1/db", "unknown scheme 'mysql'"),
    ("/just/a/path", "unknown scheme '(none)'"),
    ("postgresql://u:hunter2@127.0.0.1:1/db", "cannot reach the database"),
])
def test_unknown_or_unreachable_fails_closed_naming_the_variable(uri, says):
    with pytest.raises(StateStoreUnavailable) as info:
        open_store(uri)
    msg = str(info.value)
    assert msg.startswith("LOOPML_STATE_URI=") and says in msg and "\n" not in msg
    assert "hunter2" not in msg and "pw@" not in msg  # never the password
    assert info.value.exit_code == 2 and info.value.http_status == 503


def test_redact_hides_only_the_password():
    assert redact("postgresql://loopml:s3cr:et@db.example:5432/state") == "postgresql://loopml:***@db.example:5432/state"
    assert redact("postgresql://loopml@db/state") == "postgresql://loopml@db/state"


def test_cli_exits_2_with_one_line_on_an_unreachable_store(workspace, project):
    env = {"LOOPML_HOME": str(workspace.home), "LOOPML_STATE_URI": "postgresql://u:pw@127.0.0.1:1/nope",
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "loopml.cli.main", "status", "-p", str(project)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "LOOPML_STATE_URI=postgresql://u:***@127.0.0.1:1/nope" in lines[0]
    assert not (workspace.home / "state.db").exists()  # no silent fall-back to the local file


def test_an_existing_state_db_opens_unchanged(tmp_path):
    """A workspace from before the store: same tables, its rows readable, the index still bites."""
    from loopml.loop.state import RolloutConflict, StateStore

    db = tmp_path / "state.db"
    con = sqlite3.connect(db)
    con.executescript("""
        CREATE TABLE rollouts (id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, challenger TEXT NOT NULL,
            champion TEXT, status TEXT NOT NULL, step INTEGER NOT NULL DEFAULT 0, step_started REAL NOT NULL,
            baseline TEXT NOT NULL DEFAULT '{}', decisions TEXT NOT NULL DEFAULT '[]', trigger_id INTEGER,
            created REAL NOT NULL, updated REAL NOT NULL);
        CREATE UNIQUE INDEX one_active_rollout ON rollouts(model)
            WHERE status IN ('running', 'paused', 'promoting', 'rolling_back');
        CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO rollouts(model, challenger, champion, status, step, step_started, created, updated)
            VALUES ('m', '2', '1', 'running', 1, 0, 0, 0);
        INSERT INTO kv VALUES ('k', '"v"');
    """)
    con.commit()
    con.close()
    s = StateStore(db)
    assert s.active_rollout("m").step == 1 and s.get("k") == "v"
    with pytest.raises(RolloutConflict):
        s.start_rollout("m", "3", "1")
    assert s.add_trigger("m", "manual", "new table").status == "queued"  # missing tables were added
