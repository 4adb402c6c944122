"""``loopml serve`` as a managed child process, found again after a controller restart.

The running server is recorded in ``<home>/run/server.json`` (pid, url, how it was started)
from the moment it is spawned, with ``state`` "starting" and then "ready". A controller that
starts while a recorded server is alive adopts it instead of starting another, so killing the
controller never takes the served model down, and a controller killed while its server was
still starting does not leave an unrecorded server holding the port (the next one adopts it
and waits for it). The admin token lives in ``<home>/run/admin.token`` (mode 0600) unless
``LOOPML_ADMIN_TOKEN`` is set; it is passed to the server through its environment and never
printed. :mod:`loopml.loop.supervisor` restarts a server that dies.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from loopml.config import Workspace
from loopml.errors import PortInUse, ServeError
from loopml.procs import pid_alive as _alive
from loopml.serve.settings import check_port


def run_dir(workspace: Workspace) -> Path:
    d = workspace.home / "run"
    d.mkdir(parents=True, exist_ok=True)
    return d


def admin_token(workspace: Workspace, create: bool = True) -> str | None:
    env = os.environ.get("LOOPML_ADMIN_TOKEN")
    if env:
        return env
    path = run_dir(workspace) / "admin.token"
    if path.exists():
        return path.read_text().strip()
    if not create:
        return None
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    return token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now. SO_REUSEADDR as the server itself binds
    (serve.server.bind_socket): a port whose last connections sit in TIME_WAIT after a stop is
    free, and only a live listener makes it taken."""
    check_port(port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _is_server(pid: int) -> bool:
    """Guard against pid reuse: the process of a recorded pid runs ``loopml ... serve``."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            args = fh.read().split(b"\0")
    except OSError:
        return True  # cannot tell (not Linux): trust the record
    return any(b"loopml" in a for a in args) and b"serve" in args


def describe_exit(returncode: int | None) -> str:
    """"killed by SIGKILL", "exited with code 1", or "exited" when it was not our child."""
    if returncode is None:
        return "exited (status unknown: not a child of this controller)"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


class ServerProcess:
    """A ``loopml serve`` child process; :meth:`stop` sends SIGTERM (graceful: the log is flushed)."""

    def __init__(self, workspace: Workspace, models: list[str], *, host: str = "127.0.0.1", port: int = 0,
                 poll_interval: float = 1.0, token: str | None = None, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, project: str | Path | None = None) -> None:
        """``project``: the folder whose loopml.yaml ``serving`` section the server applies
        (batching, workers, allow_unsafe_pickle), through ``loopml serve --project``."""
        self.workspace, self.models, self.host = workspace, models, host
        self.project = Path(project).resolve() if project is not None else None
        self.port = check_port(port) or free_port()  # fixed now: a restarted server binds the same port
        self.poll_interval, self.token = poll_interval, token
        self.extra_args = extra_args or []
        self.env = env or {}
        self.pid: int | None = None
        self.proc: subprocess.Popen | None = None
        self.started_at: float | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def record(self) -> Path:
        return run_dir(self.workspace) / "server.json"

    @classmethod
    def adopt(cls, workspace: Workspace) -> "ServerProcess | None":
        """The server a previous ``loopml up`` left running for this workspace, if it is alive
        (ready or still starting: :meth:`wait_ready` tells)."""
        path = run_dir(workspace) / "server.json"
        try:
            info = json.loads(path.read_text())
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not (_alive(pid) and _is_server(pid)):
            return None
        sp = cls(workspace, info["models"], host=info["host"], port=int(info["port"]),
                 poll_interval=float(info.get("poll_interval", 1.0)), extra_args=info.get("extra_args"),
                 project=info.get("project"))
        sp.pid, sp.started_at = pid, info.get("started")
        return sp

    def command(self) -> list[str]:
        """The ``loopml serve`` command line of this server."""
        cmd = [sys.executable, "-m", "loopml.cli.main", "serve", "--host", self.host, "--port", str(self.port),
               "--home", str(self.workspace.home), "--poll-interval", str(self.poll_interval)]
        if self.project is not None:
            cmd += ["--project", str(self.project)]
        cmd += self.extra_args
        for m in self.models:
            cmd += ["-m", m]
        return cmd

    def alive(self) -> bool:
        """Whether the server process runs (our child: reaped here, so a dead one is seen dead)."""
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and _alive(self.pid)

    def exit_reason(self) -> str:
        return describe_exit(self.proc.returncode if self.proc is not None else None)

    def responsive(self, timeout: float = 2.0) -> bool:
        """Whether the server answers ``GET /v2/health/live`` within ``timeout``. Any HTTP answer
        counts, a 503 included: an overloaded server that sheds load is responsive, one that
        accepts the connection (the kernel does that for a stopped process) but never answers
        is not."""
        import http.client

        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("GET", "/v2/health/live")
            conn.getresponse().read()
            return True
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the server and its ``--workers`` children, then reap it. For a hung server,
        which may never act on the SIGTERM of :meth:`stop` (a stopped process does not). The
        server leads its own process group (``start_new_session``); a pid that does not (a
        record from elsewhere) is killed alone."""
        if self.pid is None:
            return
        try:
            if os.getpgid(self.pid) == self.pid:
                os.killpg(self.pid, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            return
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.alive():
            time.sleep(0.05)

    def healthy(self, path: str = "/v2/health/ready", timeout: float = 1.0) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.url}{path}", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def _write_record(self, state: str) -> None:
        from loopml.fileio import atomic_write_json

        atomic_write_json(self.record, {
            "pid": self.pid, "host": self.host, "port": self.port, "models": self.models, "url": self.url,
            "project": str(self.project) if self.project else None, "poll_interval": self.poll_interval,
            "extra_args": self.extra_args, "state": state, "started": self.started_at})

    def start(self, timeout: float = 90.0, abort: Callable[[], bool] | None = None) -> "ServerProcess":
        """Spawn the server and wait until it is ready. ``abort`` ends the wait early (the
        server is stopped); so does the server exiting or ``timeout``."""
        if not port_free(self.host, self.port):
            raise PortInUse(self.host, self.port)
        cmd = self.command()
        env = {**os.environ, **self.env}
        env.setdefault("OMP_NUM_THREADS", "1")  # one request's predict must not fan out over every core
        if self.token:
            env["LOOPML_ADMIN_TOKEN"] = self.token
        self.log_path = run_dir(self.workspace) / "server.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        self.pid, self.started_at = self.proc.pid, time.time()
        # recorded before it is ready: a controller killed now leaves a server the next one adopts
        self._write_record("starting")
        try:
            self.wait_ready(timeout, abort)
        except BaseException:
            self.stop()
            raise
        self._write_record("ready")
        return self

    def wait_ready(self, timeout: float = 90.0, abort: Callable[[], bool] | None = None) -> "ServerProcess":
        """Wait for ``/v2/health/ready``; ServeError when the server exits, ``abort`` or ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                where = f"; see {self.log_path}" if getattr(self, "log_path", None) else ""
                raise ServeError(f"the server {self.exit_reason()}{where}")
            if abort is not None and abort():
                raise ServeError("stopped while the server was starting")
            if self.healthy():
                return self
            time.sleep(0.2)
        where = f"; see {self.log_path}" if getattr(self, "log_path", None) else ""
        raise ServeError(f"the server did not become ready within {timeout:.0f} s{where}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.pid and self.alive():
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            end = time.monotonic() + timeout
            while time.monotonic() < end and self.alive():
                time.sleep(0.05)
            if self.alive():
                os.kill(self.pid, signal.SIGKILL)
            if self.proc is not None:
                self.proc.wait()
        if self.record.exists():
            try:
                if json.loads(self.record.read_text()).get("pid") == self.pid:
                    self.record.unlink()
            except (OSError, ValueError):
                pass
