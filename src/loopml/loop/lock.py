"""One controller per project: ``loopml up`` holds an exclusive ``flock`` on
``<home>/run/controller.lock`` for as long as it runs.

``flock`` belongs to the open file, so the kernel releases it when the process dies however
it dies (SIGKILL included): a killed controller never leaves the lock held, and there is no
stale pid file to clean up by hand. The holder writes its pid, start time and project into
the file so that a second ``loopml up`` can say which one is running. The descriptor is not
inheritable, so the server ``loopml up`` starts (which outlives it by design) never holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from loopml.config import Workspace
from loopml.errors import ControllerRunning
from loopml.procs import pid_alive as _alive


def lock_path(workspace: Workspace) -> Path:
    return workspace.home / "run" / "controller.lock"


class ControllerLock:
    """``acquire()`` takes the lock or raises :class:`ControllerRunning`; ``release()`` (or the
    process ending) gives it back."""

    def __init__(self, workspace: Workspace, project: str | os.PathLike | None = None) -> None:
        self.path = lock_path(workspace)
        self.project = str(Path(project).resolve()) if project is not None else None
        self._fd: int | None = None

    def acquire(self) -> "ControllerLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # O_CLOEXEC: children never hold it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._running() from None
        except BaseException:
            os.close(fd)
            raise
        info = {"pid": os.getpid(), "started_at": time.strftime("%Y-%m-%d %H:%M:%S"), "ts": time.time(),
                "project": self.project}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def holder(self) -> dict:
        """What the holder wrote (empty while it has not written yet, or when unreadable)."""
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def _running(self) -> ControllerRunning:
        info = self.holder()
        for _ in range(20):  # the holder writes right after it locks (until then: empty, or a dead one's)
            if info.get("pid") and _alive(int(info["pid"])):
                break
            time.sleep(0.05)
            info = self.holder()
        return ControllerRunning(str(self.path), info.get("pid"), info.get("started_at"), info.get("project"))

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)  # a clean exit leaves no holder to name (a killed one a dead pid)
            except OSError:
                pass
            os.close(self._fd)  # closing the file drops the flock
            self._fd = None

    def __enter__(self) -> "ControllerLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
