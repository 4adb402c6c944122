"""loop/lock.py: one controller at a time, a lock a killed controller never leaves held; on
the workspace's SQLite store (flock) and on PostgreSQL (a session advisory lock)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from loopml.config import Workspace
from loopml.errors import ControllerRunning
from loopml.loop.lock import ControllerLock

# A controller stand-in: takes the lock, starts a child that outlives it (as the server does),
# says so, and waits to be killed.
HOLDER = """
import subprocess, sys, time
from pathlib import Path
from loopml.config import Workspace
from loopml.loop.lock import ControllerLock
ControllerLock(Workspace(Path(sys.argv[1]), state_uri_override=sys.argv[3] or None), sys.argv[2]).acquire()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def ws(request, workspace) -> Workspace:
    if request.param == "sqlite":
        return workspace
    return Workspace(workspace.home, state_uri_override=request.getfixturevalue("pg_url"))


def test_second_lock_names_the_holder(ws, tmp_path):
    first = ControllerLock(ws, tmp_path / "proj").acquire()
    try:
        with pytest.raises(ControllerRunning) as info:
            ControllerLock(ws, tmp_path / "other").acquire()
        err = info.value
        assert err.pid == os.getpid() and err.started_at and err.project == str((tmp_path / "proj").resolve())
        msg = str(err)
        assert f"pid {os.getpid()}" in msg and "started at" in msg and "\n" not in msg
        assert err.exit_code == 2
        assert ControllerLock(ws).holder()["pid"] == os.getpid()
    finally:
        first.release()
    assert ControllerLock(ws).holder().get("pid") is None  # a clean exit leaves no holder to name
    ControllerLock(ws).acquire().release()  # released: free again


def test_sigkilled_holder_leaves_the_lock_free_even_with_a_surviving_child(ws, tmp_path):
    uri = ws.state_uri if ws.state_uri_override else ""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(ws.home), str(tmp_path), uri],
                            stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    try:
        with pytest.raises(ControllerRunning) as info:
            ControllerLock(ws).acquire()
        assert info.value.pid == proc.pid
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        os.kill(child, 0)  # the child it started still runs (as a server outlives its controller) ...
        lock = ControllerLock(ws).acquire()  # ... and does not hold the lock
        assert lock.holder()["pid"] == os.getpid()
        lock.release()
    finally:
        if proc.poll() is None:
            proc.kill()
        os.kill(child, signal.SIGKILL)


def test_on_postgresql_the_lock_is_one_per_store_not_per_folder(workspace, tmp_path, pg_url):
    """Two machines (different local folders) on one state store: one controller between them."""
    one = Workspace(tmp_path / "one", state_uri_override=pg_url)
    two = Workspace(tmp_path / "two", state_uri_override=pg_url)
    with ControllerLock(one, tmp_path / "proj"):
        with pytest.raises(ControllerRunning) as info:
            ControllerLock(two).acquire()
        assert "advisory lock 'controller'" in info.value.lock_path and "postgresql://" in info.value.lock_path
        assert not (two.home / "run" / "controller.lock").exists()  # no flock file involved
    ControllerLock(two).acquire().release()
