"""loop/supervisor.py and ``loopml up``: a dead server is restarted with backoff, recorded in the
audit log and ``loopml status``; one controller per workspace; the controller's own registry
honours ``serving.allow_unsafe_pickle``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

from loopml.loop.server_process import ServerProcess
from loopml.loop.state import StateStore
from loopml.loop.supervisor import STATE_KEY, Supervisor, restart_delay
from loopml.registry import audit


def wait_for(pred, timeout: float = 60.0, interval: float = 0.05) -> bool:
    """A bounded wait for a condition (not a timing assertion)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval)
    return pred()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_restart_delay_doubles_and_is_capped():
    assert [restart_delay(n, 0.5, 5.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_sigkilled_server_is_restarted_on_its_port_recorded_and_adoptable(registered_model):
    ws, name = registered_model
    server = ServerProcess(ws, [f"{name}@champion"], poll_interval=0.5).start()
    sup = Supervisor(server, name, base_s=0.05, check_s=0.05, say=lambda m: None).start()
    try:
        old = server.pid
        os.kill(old, signal.SIGKILL)
        assert wait_for(lambda: sup.restarts == 1 and server.healthy(), timeout=120)
        assert server.pid != old and server.alive()
        # the record names the new process: a controller started now adopts it, not a second server
        adopted = ServerProcess.adopt(ws)
        assert adopted is not None and adopted.pid == server.pid and adopted.port == server.port
        events = [e for e in audit.read(ws.audit_log, name) if e.action == "server-restarted"]
        assert len(events) == 1 and "killed by SIGKILL" in events[0].why
        assert events[0].evidence["old_pid"] == old and events[0].evidence["pid"] == server.pid
        assert events[0].evidence["cause"] == "exited"
        state = StateStore(ws.state_db).get(STATE_KEY)
        assert state["state"] == "running" and state["total_restarts"] == 1 and state["pid"] == server.pid
    finally:
        sup.stop()
        server.stop()


def test_failed_restarts_back_off_then_succeed_and_the_count_resets(registered_model):
    ws, name = registered_model
    clock = Clock()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    # a recorded server that has died (never our child): the port is taken by someone else
    server = ServerProcess(ws, [f"{name}@champion"], port=port, poll_interval=0.5)
    sup = Supervisor(server, name, base_s=1.0, cap_s=4.0, reset_after_s=60.0, say=lambda m: None, clock=clock)
    try:
        assert sup.check() is False and sup.in_a_row == 1 and sup.next_try == 1001.0
        assert sup.check() is False and sup.in_a_row == 1  # not before its delay
        delays = []
        for _ in range(3):
            clock.now = sup.next_try
            assert sup.check() is False  # port in use: the start fails
            delays.append(sup.next_try - clock.now)
        assert delays == [2.0, 4.0, 4.0]  # doubling, capped
        failed = [e for e in audit.read(ws.audit_log, name) if e.action == "server-restart-failed"]
        assert len(failed) == 3 and "in use" in failed[0].why
        assert StateStore(ws.state_db).get(STATE_KEY)["state"] == "down"
        blocker.close()
        clock.now = sup.next_try
        assert sup.check() is True and server.healthy() and sup.restarts == 1
        assert sup.in_a_row == 4  # still counted until it has stayed up a while ...
        clock.now += 61.0
        assert sup.check() is True and sup.in_a_row == 0  # ... then the next crash restarts at once
    finally:
        blocker.close()
        server.stop()


def _up(project, env, out):
    with open(out, "w") as fh:  # the controller's console, to read what it did
        return subprocess.Popen([sys.executable, "-m", "loopml.cli.main", "up", "-p", str(project)],
                                env=env, stdout=fh, stderr=subprocess.STDOUT, text=True)


def _record(ws) -> dict:
    try:
        return json.loads((ws.home / "run" / "server.json").read_text())
    except (OSError, ValueError):
        return {}


def _status(project, env) -> dict:
    out = subprocess.run([sys.executable, "-m", "loopml.cli.main", "status", "-p", str(project), "--json"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_up_restarts_its_server_refuses_a_second_up_and_frees_the_lock_when_killed(registered_model, project):
    ws, name = registered_model
    raw = yaml.safe_load((project / "loopml.yaml").read_text())
    raw["triggers"] = {"on_drift": False}
    (project / "loopml.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "LOOPML_HOME": str(ws.home), "LOOPML_ADMIN_TOKEN": "t0ken"}
    first = _up(project, env, project / "first.out")
    procs = [first]
    try:
        assert wait_for(lambda: _record(ws).get("state") == "ready", timeout=120), (project / "first.out").read_text()
        server_pid = _record(ws)["pid"]
        # a second controller on the same workspace: exit 2, one line naming the first
        second = subprocess.run([sys.executable, "-m", "loopml.cli.main", "up", "-p", str(project)], env=env,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"pid {first.pid}" in lines[0] and "started at" in lines[0]
        # SIGKILL the server: the controller restarts it on the same port and says so in status
        os.kill(server_pid, signal.SIGKILL)
        assert wait_for(lambda: _record(ws).get("state") == "ready" and _record(ws)["pid"] != server_pid, 120)
        status = _status(project, env)
        assert status["server"]["pid"] == _record(ws)["pid"]
        assert status["supervisor"]["controller"]["pid"] == first.pid
        assert status["supervisor"]["total_restarts"] == 1
        assert "killed by SIGKILL" in status["supervisor"]["server"]["reason"]
        # SIGKILL the controller: its lock goes with it; a new up starts and adopts the server
        restarted = _record(ws)["pid"]
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        third = _up(project, env, project / "third.out")
        procs.append(third)
        from loopml.loop.lock import ControllerLock

        assert wait_for(lambda: "adopted the running server" in (project / "third.out").read_text(), 120), \
            (project / "third.out").read_text()
        assert ControllerLock(ws).holder()["pid"] == third.pid
        assert third.poll() is None and _record(ws)["pid"] == restarted  # adopted, not replaced
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
        left = ServerProcess.adopt(ws)
        if left is not None:
            left.stop()


def test_status_shows_a_down_server_and_its_restarts(workspace, project):
    from rich.console import Console

    from loopml.cli.loop import _render, _status as status_of
    from loopml.loop.lock import ControllerLock

    lock = ControllerLock(workspace, project).acquire()  # a controller is running: this process
    try:
        StateStore(workspace.state_db).put(STATE_KEY, {
            "state": "down", "pid": 4242, "reason": "killed by SIGKILL", "total_restarts": 3, "ts": 1_000_000.0,
            "down_since": 1_000_000.0, "next_try": 1_000_004.0, "error": "port 8080 on 127.0.0.1 is in use"})
        s = status_of(project, workspace.home, None)
        console = Console(record=True, width=300)
        console.print(_render(s))
        text = console.export_text()
        assert "DOWN since" in text and "killed by SIGKILL" in text and "restart at" in text and "in use" in text
        assert f"running (pid {os.getpid()}" in text
    finally:
        lock.release()
    assert status_of(project, workspace.home, None)["supervisor"]["server"] is None  # no controller: stale


def test_up_applies_allow_unsafe_pickle_to_its_own_registry(registered_model, project, monkeypatch):
    """serving.allow_unsafe_pickle reaches the controller process itself, not only its server."""
    import loopml.cli.loop as cli_loop
    from loopml.loop.controller import Controller

    ws, name = registered_model
    raw = yaml.safe_load((project / "loopml.yaml").read_text())
    raw["serving"] = {**(raw.get("serving") or {}), "allow_unsafe_pickle": True}
    (project / "loopml.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("LOOPML_ALLOW_UNSAFE_PICKLE", "")  # remembered, so that undo removes what up sets ...
    monkeypatch.delenv("LOOPML_ALLOW_UNSAFE_PICKLE")  # ... and unset: the spec decides (env would win)
    seen = {}

    class NoServer(ServerProcess):
        def start(self, *a, **kw):
            seen["env"] = dict(self.env)
            return self

        def alive(self):
            return True

        def stop(self, *a, **kw):
            pass

    monkeypatch.setattr("loopml.loop.server_process.ServerProcess", NoServer)
    monkeypatch.setattr(Controller, "run", lambda self, should_stop, **kw: seen.update(
        registry=self.registry.allow_unsafe_pickle))
    cli_loop.up(project=project, home=ws.home, tracking_uri=None, port=None, run_for=0.1)
    assert seen["registry"] is True


# -- a hung server (alive, not answering): liveness probe -------------------------------------

_SHEDDING = """
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # an overloaded server: it answers, but 503
        self.send_response(503)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


@pytest.fixture
def shedding_server(workspace):
    """A real process that answers every request 503, as a ServerProcess the supervisor watches."""
    proc = subprocess.Popen([sys.executable, "-c", _SHEDDING], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    port = int(proc.stdout.readline())
    server = ServerProcess(workspace, ["m@champion"], port=port)
    server.proc, server.pid = proc, proc.pid
    yield server
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
    proc.wait()


def test_a_server_answering_503_is_alive_and_only_failures_in_a_row_kill(shedding_server):
    server, clock = shedding_server, Clock()
    sup = Supervisor(server, "m", base_s=60.0, probe_every_s=1.0, probe_timeout_s=0.5, probe_failures=2,
                     say=lambda m: None, clock=clock)
    for _ in range(4):  # shedding load is not hanging: never killed for it
        clock.now += 1.0
        assert sup.check() is True and sup.failed_probes == 0
    os.kill(server.pid, signal.SIGSTOP)
    clock.now += 1.0
    assert sup.check() is True and sup.failed_probes == 1
    os.kill(server.pid, signal.SIGCONT)  # it answers again: the count starts over
    clock.now += 1.0
    assert sup.check() is True and sup.failed_probes == 0
    os.kill(server.pid, signal.SIGSTOP)
    clock.now += 1.0
    assert sup.check() is True and sup.failed_probes == 1
    clock.now += 0.5  # the next probe is not due yet: no second failure counted
    assert sup.check() is True and sup.failed_probes == 1
    clock.now += 0.5
    assert sup.check() is False  # second failure in a row: killed, restart pending (60 s backoff)
    assert server.proc.returncode == -signal.SIGKILL and not server.alive()
    assert sup.last_reason.startswith("unresponsive") and sup.in_a_row == 1
    state = StateStore(server.workspace.state_db).get(STATE_KEY)
    assert state["state"] == "down" and state["reason"].startswith("unresponsive")


def test_probe_failures_zero_turns_the_liveness_probe_off(shedding_server):
    server, clock = shedding_server, Clock()
    sup = Supervisor(server, "m", probe_failures=0, say=lambda m: None, clock=clock)
    os.kill(server.pid, signal.SIGSTOP)
    for _ in range(3):
        clock.now += 5.0
        assert sup.check() is True
    assert server.alive()


def test_sigstopped_server_is_killed_and_replaced_audited_unresponsive(registered_model):
    ws, name = registered_model
    server = ServerProcess(ws, [f"{name}@champion"], poll_interval=0.5).start()
    sup = Supervisor(server, name, base_s=0.05, check_s=0.05, probe_every_s=0.1, probe_timeout_s=0.5,
                     probe_failures=2, say=lambda m: None).start()
    old = server.pid
    try:
        os.kill(old, signal.SIGSTOP)  # alive, holding its port, answering nothing
        assert wait_for(lambda: sup.restarts == 1 and server.healthy(), timeout=120)
        assert server.pid != old and server.alive()
        from loopml.procs import pid_alive

        assert not pid_alive(old)  # killed and reaped, not left stopped beside the new one
        events = [e for e in audit.read(ws.audit_log, name) if e.action == "server-restarted"]
        assert len(events) == 1 and "unresponsive" in events[0].why
        assert events[0].evidence["cause"] == "unresponsive" and events[0].evidence["old_pid"] == old
        state = StateStore(ws.state_db).get(STATE_KEY)
        assert state["state"] == "running" and state["reason"].startswith("unresponsive")
        assert sup.check() is True  # the new server answers its probes
    finally:
        sup.stop()
        try:
            os.kill(old, signal.SIGCONT)
        except ProcessLookupError:
            pass
        server.stop()
