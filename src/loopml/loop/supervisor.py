"""Keep the server ``loopml up`` runs alive: restart it when it dies, with backoff.

A thread beside the controller looks at the server process every ``check_s``. When it has
died (SIGKILL, OOM, a crash), it is started again on the same host and port with the same
command line, after a delay that doubles with each restart in a row (``base_s`` x 2^(n-1),
at most ``cap_s``); a server that stayed up ``reset_after_s`` resets the count, so one crash
a day is restarted at once and a crash loop does not spin. A start that fails (port still
taken, the model does not load) counts as one more restart in a row.

Each restart is written to the audit log (action ``server-restarted`` or
``server-restart-failed``) and to ``state.db`` (key ``server.supervisor``) where ``loopml
status`` shows it. The restarted server rewrites ``run/server.json`` as soon as it is spawned
(see :mod:`loopml.loop.server_process`), so a controller restarted at any moment adopts it
instead of starting a second one beside it.

A server that is alive but hung (a deadlock, an event loop stuck in a C call, SIGSTOP) is
found by a liveness probe: ``GET /v2/health/live`` every ``probe_every_s`` with a
``probe_timeout_s`` timeout. Any HTTP answer counts as alive (a 503 from an overloaded server
too); ``probe_failures`` failed probes in a row and the server is SIGKILLed (with its workers)
and restarted like a dead one, same backoff, audited with the reason "unresponsive". The
defaults (every 2 s, 2 s timeout, 3 in a row: killed 6-8 s after its last answer) follow
Kubernetes' liveness probe (1 s timeout, 3 failures) with a longer timeout: the probe is
answered by the event loop, which a model loading in a thread leaves free, but a loaded
2-core machine can delay it; 0 failures turns the probe off.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from loopml.loop.server_process import ServerProcess
from loopml.loop.state import StateStore
from loopml.registry import audit

STATE_KEY = "server.supervisor"
UNRESPONSIVE = "unresponsive"  # the reason of a restart the liveness probe asked for
WHO = "loopml-controller"


def restart_delay(in_a_row: int, base_s: float, cap_s: float) -> float:
    """Delay before restart number ``in_a_row`` (1-based) of a server that keeps dying."""
    return min(cap_s, base_s * 2.0 ** max(0, in_a_row - 1))


class Supervisor:
    """``start()`` runs :meth:`check` in a daemon thread; ``stop()`` ends it (the server is
    left alone: stopping it is the caller's choice)."""

    def __init__(self, server: ServerProcess, model: str, *, base_s: float = 0.5, cap_s: float = 30.0,
                 reset_after_s: float = 60.0, check_s: float = 0.2, start_timeout_s: float = 120.0,
                 probe_every_s: float = 2.0, probe_timeout_s: float = 2.0, probe_failures: int = 3,
                 say: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic) -> None:
        self.server, self.model = server, model
        self.base_s, self.cap_s, self.reset_after_s = base_s, cap_s, reset_after_s
        self.check_s, self.start_timeout_s = check_s, start_timeout_s
        self.probe_every_s, self.probe_timeout_s, self.probe_failures = probe_every_s, probe_timeout_s, probe_failures
        self.say, self.clock = say, clock
        self.failed_probes = 0  # liveness probes failed in a row
        self.next_probe: float | None = None
        self.restarts = 0  # since this controller started
        self.in_a_row = 0
        self.down_since: float | None = None
        self.next_try: float | None = None
        self.up_since: float | None = clock()
        self.last_reason: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def store(self) -> StateStore:
        return StateStore(self.server.workspace.state_uri)  # opened per use; the store pools per process

    def start(self) -> "Supervisor":
        self._thread = threading.Thread(target=self._run, name="loopml-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.check_s):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - supervision outlives a full disk or a locked state.db
                self.say(f"[supervisor] check failed: {type(exc).__name__}: {exc}")

    # -- one look ---------------------------------------------------------------------------
    def check(self) -> bool:
        """Restart the server when it is dead (or hung: killed first) and its delay has passed;
        True when it runs."""
        now = self.clock()
        hung = None
        if self.server.alive():
            hung = self._probe(now)
            if hung is None:
                if self.up_since is not None and self.in_a_row and now - self.up_since >= self.reset_after_s:
                    self.in_a_row = 0  # healthy long enough: the next crash is restarted at once
                return True
            self.say(f"[supervisor] the server (pid {self.server.pid}) is {hung}; killing it")
            self.server.kill()
        if self.down_since is None:  # just found dead (or killed as hung)
            self.down_since, self.up_since = now, None
            self.last_reason = hung or self.server.exit_reason()
            self.failed_probes, self.next_probe = 0, None
            self.in_a_row += 1
            delay = restart_delay(self.in_a_row, self.base_s, self.cap_s)
            self.next_try = now + delay
            self.say(f"[supervisor] the server (pid {self.server.pid}) {self.last_reason}; "
                     f"restarting it in {delay:.1f} s (restart {self.in_a_row} in a row)")
            self._save("down")
        if now < (self.next_try or 0):
            return False
        return self._restart(now)

    def _probe(self, now: float) -> str | None:
        """One liveness probe when one is due; the reason to kill the server when the last
        ``probe_failures`` in a row failed, else None."""
        if self.probe_failures <= 0 or (self.next_probe is not None and now < self.next_probe):
            return None
        self.next_probe = now + self.probe_every_s  # from the probe's start: a timeout is not added to the period
        ok = self.server.responsive(self.probe_timeout_s)
        if ok:
            self.failed_probes = 0
            return None
        self.failed_probes += 1
        if self.failed_probes < self.probe_failures:
            return None
        self.failed_probes = 0
        return (f"{UNRESPONSIVE}: {self.probe_failures} liveness probes in a row (GET /v2/health/live) "
                f"got no answer within {self.probe_timeout_s:g} s")

    def _restart(self, now: float) -> bool:
        old_pid = self.server.pid
        try:
            self.server.start(timeout=self.start_timeout_s, abort=self._stop.is_set)
        except Exception as exc:  # noqa: BLE001 - port taken, model cannot load, ...: try again later
            if self._stop.is_set():
                return False
            self.in_a_row += 1
            delay = restart_delay(self.in_a_row, self.base_s, self.cap_s)
            self.next_try = self.clock() + delay
            what = " ".join(str(exc).split())[:300]
            self.say(f"[supervisor] restart failed: {what}; next try in {delay:.1f} s")
            self._audit("server-restart-failed", f"restart failed: {what}", {"in_a_row": self.in_a_row,
                                                                             "next_try_in_s": delay,
                                                                             "cause": self._cause()})
            self._save("down", error=what)
            return False
        down_s = self.clock() - (self.down_since or now)
        self.restarts += 1
        self.say(f"[supervisor] server restarted as pid {self.server.pid} at {self.server.url} "
                 f"after {down_s:.1f} s down ({self.last_reason})")
        self._audit("server-restarted", f"the server (pid {old_pid}) {self.last_reason}; restarted as pid "
                                        f"{self.server.pid} after {down_s:.1f} s down",
                    {"old_pid": old_pid, "pid": self.server.pid, "down_s": round(down_s, 3),
                     "in_a_row": self.in_a_row, "cause": self._cause()})
        self.down_since, self.next_try, self.up_since = None, None, self.clock()
        self.failed_probes, self.next_probe = 0, None
        self._save("running", down_s=round(down_s, 3))
        return True

    def _cause(self) -> str:
        """``unresponsive`` (killed after failed liveness probes) or ``exited`` (died by itself)."""
        return UNRESPONSIVE if (self.last_reason or "").startswith(UNRESPONSIVE) else "exited"

    # -- records ----------------------------------------------------------------------------
    def _audit(self, action: str, why: str, evidence: dict) -> None:
        try:
            audit.record_event(self.server.workspace, self.model, action, why, who=WHO,
                               evidence=evidence, alias="server")
        except Exception:  # noqa: BLE001 - the audit log may be what failed; state.db has it too
            pass

    def _save(self, state: str, **extra) -> None:
        """What ``loopml status`` shows: running or down, restarts, the last reason, next try."""
        wall = time.time() - self.clock()  # monotonic -> wall clock for people
        try:
            store = self.store
            prior = store.get(STATE_KEY) or {}
            # every restart of this workspace's server, across controller restarts
            total = int(prior.get("total_restarts", 0)) + (1 if "down_s" in extra else 0)
            store.put(STATE_KEY, {
                "state": state, "pid": self.server.pid, "url": self.server.url, "restarts": self.restarts,
                "total_restarts": total, "in_a_row": self.in_a_row, "reason": self.last_reason, "ts": time.time(),
                "next_try": (self.next_try + wall) if self.next_try else None,
                "down_since": (self.down_since + wall) if self.down_since else None, **extra})
        except Exception:  # noqa: BLE001 - bookkeeping for 'loopml status' only
            pass
