"""Workspace set-up (#8): private (0700 folders, 0600 files) whatever the umask; safe to start twice at once."""

import os
import threading
from pathlib import Path

import pytest

from loopml.config import Workspace
from loopml.fileio import atomic_write_json


@pytest.fixture
def loose_umask():
    old = os.umask(0o022)  # the usual default, which makes files world-readable
    yield
    os.umask(old)


def _mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


def test_workspace_is_created_private(tmp_path, loose_umask):
    ws = Workspace(tmp_path / "deep" / "ws").init()
    assert _mode(ws.home) == 0o700
    for sub in (ws.artifacts, ws.snapshots, ws.predictions, ws.cache):
        assert _mode(sub) == 0o700, sub
    assert _mode(ws.home / "mlflow.db") == 0o600  # created before SQLite would create it 0644
    assert _mode(tmp_path / "deep") == 0o755  # parents that are not the workspace keep the umask
    assert _mode(atomic_write_json(ws.cache / "x.json", {"a": 1})) == 0o600


def test_an_existing_folder_keeps_its_mode(tmp_path, loose_umask):
    home = tmp_path / "shared"
    home.mkdir(mode=0o750)
    os.chmod(home, 0o750)
    Workspace(home).init()
    assert _mode(home) == 0o750


def test_a_remote_workspace_has_no_local_database(tmp_path):
    ws = Workspace(tmp_path / "ws", tracking_uri_override="http://127.0.0.1:5000").init()
    assert ws.local_db is None and not (ws.home / "mlflow.db").exists()


def test_the_workspace_lock_excludes_another_holder(tmp_path):
    """flock is per open file: a second holder (as another process would) waits for the first."""
    ws = Workspace(tmp_path / "ws")
    order: list[str] = []

    def second() -> None:
        with ws.lock():
            order.append("second")

    with ws.lock():
        t = threading.Thread(target=second)
        t.start()
        t.join(timeout=0.5)
        order.append("first")
    t.join(timeout=30)
    assert order == ["first", "second"]
