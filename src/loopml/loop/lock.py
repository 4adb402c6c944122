"""One controller at a time: ``loopml up`` holds the controller lock for as long as it runs.

On the workspace's SQLite store the lock is an exclusive ``flock`` on
``<home>/run/controller.lock``. ``flock`` belongs to the open file, so the kernel releases it
when the process dies however it dies (SIGKILL included): a killed controller never leaves
the lock held, and there is no stale pid file to clean up by hand. The descriptor is not
inheritable, so the server ``loopml up`` starts (which outlives it by design) never holds it.

On PostgreSQL (``LOOPML_STATE_URI``; controllers may run on different machines) the lock is
a session advisory lock (``pg_try_advisory_lock``) on a connection of its own: PostgreSQL
releases it when that session ends, and the session ends when the holder's socket closes,
which the kernel does for a SIGKILLed process too. libpq's socket is close-on-exec, so the
server never holds it either.

Either way the holder records its pid, host, start time and project (in the lock file, or
in the store's ``holders`` table) so that a second ``loopml up`` can say which one is running.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from loopml.config import Workspace
from loopml.errors import ControllerRunning
from loopml.procs import pid_alive as _alive

LOCK_NAME = "controller"


def lock_path(workspace: Workspace) -> Path:
    return workspace.home / "run" / "controller.lock"


def _on_postgres(workspace: Workspace) -> bool:
    from loopml.store.base import scheme_of

    return scheme_of(workspace.state_uri) == "postgresql"


class ControllerLock:
    """``acquire()`` takes the lock or raises :class:`ControllerRunning`; ``release()`` (or the
    process ending) gives it back. The constructor does no I/O."""

    def __init__(self, workspace: Workspace, project: str | os.PathLike | None = None) -> None:
        self.workspace = workspace
        self.path = lock_path(workspace)
        self.project = str(Path(project).resolve()) if project is not None else None
        self.remote = _on_postgres(workspace)
        self._fd: int | None = None
        self._session = None  # the PostgreSQL session holding the advisory lock

    def _info(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                "ts": time.time(), "project": self.project}

    def acquire(self) -> "ControllerLock":
        if self.remote:
            return self._acquire_session()
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
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self._info()).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def _acquire_session(self) -> "ControllerLock":
        from loopml.store import open_store
        from loopml.store.schema import holders
        from loopml.store.upsert import upsert

        store = open_store(self.workspace.state_uri)
        session = store.session_lock(LOCK_NAME)
        if session is None:
            raise self._running()
        info = json.dumps(self._info())
        try:  # a dead holder's record is simply overwritten: holding the lock is what counts
            store.run(lambda con: upsert(con, holders, {"name": LOCK_NAME}, {"info": info}))
        except BaseException:
            session.release()
            raise
        self._session = session
        return self

    def holder(self) -> dict:
        """What the holder wrote (empty while it has not written yet, when unreadable, and on
        PostgreSQL when nobody holds the lock)."""
        if self.remote:
            return self._session_holder()
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def _session_holder(self) -> dict:
        from sqlalchemy import select, text

        from loopml.store import open_store
        from loopml.store.schema import holders
        from loopml.store.sql import lock_key

        key = lock_key(LOCK_NAME)
        # an advisory lock on a bigint shows in pg_locks as (classid, objid) = (high, low) 32 bits
        held = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
                    "AND classid::bigint = :hi AND objid::bigint = :lo")

        def go(con) -> dict:
            if not con.execute(held, {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF}).scalar():
                return {}
            raw = con.execute(select(holders.c.info).where(holders.c.name == LOCK_NAME)).scalar()
            return json.loads(raw) if raw else {}
        return open_store(self.workspace.state_uri).run(go)

    def _running(self) -> ControllerRunning:
        info = self.holder()
        for _ in range(20):  # the holder writes right after it locks (until then: empty, or a dead one's)
            if info.get("pid") and (self.remote or _alive(int(info["pid"]))):
                break
            time.sleep(0.05)
            info = self.holder()
        where = str(self.path)
        if self.remote:
            from loopml.store import redact

            where = f"advisory lock {LOCK_NAME!r} in {redact(self.workspace.state_uri)}"
            if info.get("host") and info["host"] != socket.gethostname():
                info["project"] = f"{info.get('project')} on host {info['host']}"
        return ControllerRunning(where, info.get("pid"), info.get("started_at"), info.get("project"))

    def release(self) -> None:
        if self._session is not None:
            from loopml.store import open_store
            from loopml.store.schema import holders

            try:  # a clean exit leaves no holder to name
                open_store(self.workspace.state_uri).run(
                    lambda con: con.execute(holders.delete().where(holders.c.name == LOCK_NAME)))
            except Exception:  # noqa: BLE001 - the database may be gone; its lock went with the session
                pass
            self._session.release()
            self._session = None
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
