"""The worker processes of ``loopml serve --workers N``: they die with their master and share
every admin change.

uvicorn's master binds the port and spawns N workers that inherit the listening socket. When
the master is SIGKILLed, nothing tells the workers, and they keep the port (a restarted
server then fails "port in use"). So each worker, as it starts (:func:`as_worker`, called by
the app factory the workers run):

- asks the kernel to send it SIGTERM when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``),
  and checks the parent did not die before that took effect;
- starts a watchdog thread that waits on the parent's sentinel (or polls the parent pid where
  there is no sentinel): on another system it sends the SIGTERM itself, and in every case it
  ends the process ``grace_s`` after the parent died, should a graceful shutdown hang;
- joins the master's worker group (:class:`~loopml.serve.policy_store.SharedEndpoints`).

SIGTERM is uvicorn's graceful shutdown: the listener closes at once (the port is free as soon
as every worker has closed it), in-flight requests finish and the prediction log is flushed.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Any

log = logging.getLogger("loopml.serve")
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _pdeathsig(sig: int) -> bool:
    """Have the kernel send ``sig`` to this process when its parent exits; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _wait_for_parent_death(parent_pid: int, sentinel: int | None, poll_s: float) -> None:
    if sentinel is not None:
        from multiprocessing.connection import wait

        try:
            wait([sentinel])  # readable (EOF) once the parent has exited
            return
        except OSError:
            pass
    while os.getppid() == parent_pid:
        time.sleep(poll_s)


def die_with_parent(sig: int = signal.SIGTERM, *, grace_s: float = 30.0, poll_s: float = 0.5,
                    use_prctl: bool = True) -> int:
    """Make this process end when its parent does; returns the parent's pid.

    ``use_prctl=False`` leaves it to the watchdog alone (as on systems without prctl)."""
    parent = multiprocessing.parent_process()
    parent_pid = parent.pid if parent is not None and parent.pid else os.getppid()
    armed = _pdeathsig(sig) if use_prctl else False
    me = os.getpid()

    def watchdog() -> None:
        _wait_for_parent_death(parent_pid, parent.sentinel if parent is not None else None, poll_s)
        if not armed:
            log.warning("worker %d: master %d is gone; shutting down", me, parent_pid)
            os.kill(me, sig)
        time.sleep(grace_s)
        os._exit(1)  # a graceful shutdown that hangs must not keep the port

    threading.Thread(target=watchdog, name="loopml-parent-watchdog", daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect: nobody will signal us
        os.kill(me, sig)
    return parent_pid


def as_worker(app: Any) -> Any:
    """Hook for the ``--workers N`` app factory: die with the master, share admin changes with
    the sibling workers through the workspace. Returns ``app``."""
    from loopml.serve.policy_store import SharedEndpoints

    master = die_with_parent()
    fleet = app.fleet
    _forget_dead_groups(fleet.workspace.home / "run", master)
    fleet.join_group(SharedEndpoints(fleet.workspace.home, master))
    return app


def _forget_dead_groups(run: Any, master: int) -> None:
    """Remove the shared state of masters that are gone (it only ever meant their workers)."""
    import shutil

    from loopml.procs import pid_alive as _alive

    for d in run.glob("workers-*"):
        try:
            pid = int(d.name.split("-", 1)[1])
        except ValueError:
            continue
        if pid != master and not _alive(pid):
            shutil.rmtree(d, ignore_errors=True)
