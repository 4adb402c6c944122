"""Secrets files and process stopping shared by the platform components."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from loopml.platform.base import new_secret, spawn, stop_pid, write_private
from loopml.procs import pid_alive


def test_new_secret_is_private_random_and_kept(tmp_path):
    os.umask(0o022)
    a = new_secret(tmp_path / "s" / "one")
    assert stat.S_IMODE((tmp_path / "s" / "one").stat().st_mode) == 0o600
    assert len(a) == 48 and a != new_secret(tmp_path / "s" / "two")
    assert new_secret(tmp_path / "s" / "one") == a  # a restart keeps its credentials


def test_write_private_never_widens(tmp_path):
    path = tmp_path / "conf.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    write_private(path, '{"secret": 1}')
    assert path.read_text() == '{"secret": 1}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_stop_pid_ends_the_whole_process_group(tmp_path):
    # the child is in the spawned process's group (its own session), so it goes too
    script = ("import subprocess, sys, time; "
              "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
              "print(c.pid, flush=True); time.sleep(600)")
    log = tmp_path / "p.log"
    pid = spawn([sys.executable, "-c", script], log)
    for _ in range(100):
        if log.read_text().strip():
            break
        subprocess.run(["sleep", "0.1"])
    child = int(log.read_text().split()[0])
    assert pid_alive(pid) and pid_alive(child)
    stop_pid(pid)
    for _ in range(50):
        if not pid_alive(child):
            break
        subprocess.run(["sleep", "0.1"])
    assert not pid_alive(pid) and not pid_alive(child)
    stop_pid(pid)  # idempotent
    stop_pid(None)
