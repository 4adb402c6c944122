"""loop/lock.py: one controller per workspace, a lock a killed controller never leaves held."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from loopml.errors import ControllerRunning
from loopml.loop.lock import ControllerLock

# A controller stand-in: takes the lock, starts a child that outlives it (as the server does),
# says so, and waits to be killed.
HOLDER = """
import subprocess, sys, time
from pathlib import Path
from loopml.config import Workspace
from loopml.loop.lock import ControllerLock
ControllerLock(Workspace(Path(sys.argv[1])), sys.argv[2]).acquire()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
print(child.pid, flush=True)
time.sleep(60)
"""


def test_second_lock_names_the_holder(workspace, tmp_path):
    first = ControllerLock(workspace, tmp_path / "proj").acquire()
    try:
        with pytest.raises(ControllerRunning) as info:
            ControllerLock(workspace, tmp_path / "other").acquire()
        err = info.value
        assert err.pid == os.getpid() and err.started_at and err.project == str((tmp_path / "proj").resolve())
        msg = str(err)
        assert f"pid {os.getpid()}" in msg and "started at" in msg and "\n" not in msg
        assert err.exit_code == 2
    finally:
        first.release()
    ControllerLock(workspace).acquire().release()  # released: free again


def test_sigkilled_holder_leaves_the_lock_free_even_with_a_surviving_child(workspace, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workspace.home), str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    try:
        with pytest.raises(ControllerRunning) as info:
            ControllerLock(workspace).acquire()
        assert info.value.pid == proc.pid
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        os.kill(child, 0)  # the child it started still runs (as a server outlives its controller) ...
        lock = ControllerLock(workspace).acquire()  # ... and does not hold the lock
        assert lock.holder()["pid"] == os.getpid()
        lock.release()
    finally:
        if proc.poll() is None:
            proc.kill()
        os.kill(child, signal.SIGKILL)
