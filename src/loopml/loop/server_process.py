"""``loopml serve`` as a managed child process, found again after a controller restart.

The running server is recorded in ``<home>/run/server.json`` (pid, url). A controller that
starts while a recorded server is alive and healthy adopts it instead of starting another,
so killing the controller never takes the served model down. The admin token lives in
``<home>/run/admin.token`` (mode 0600) unless ``LOOPML_ADMIN_TOKEN`` is set; it is passed to
the server through its environment and never printed.
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

from loopml.config import Workspace
from loopml.errors import PortInUse, ServeError
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


class ServerProcess:
    """A ``loopml serve`` child process; :meth:`stop` sends SIGTERM (graceful: the log is flushed)."""

    def __init__(self, workspace: Workspace, models: list[str], *, host: str = "127.0.0.1", port: int = 0,
                 poll_interval: float = 1.0, token: str | None = None, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, project: str | Path | None = None) -> None:
        """``project``: the folder whose loopml.yaml ``serving`` section the server applies
        (batching, workers, allow_unsafe_pickle), through ``loopml serve --project``."""
        self.workspace, self.models, self.host = workspace, models, host
        self.project = Path(project).resolve() if project is not None else None
        self.port = check_port(port) or free_port()
        self.poll_interval, self.token = poll_interval, token
        self.extra_args = extra_args or []
        self.env = env or {}
        self.pid: int | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def record(self) -> Path:
        return run_dir(self.workspace) / "server.json"

    @classmethod
    def adopt(cls, workspace: Workspace) -> "ServerProcess | None":
        """The server a previous ``loopml up`` left running for this workspace, if it is alive."""
        import httpx

        path = run_dir(workspace) / "server.json"
        if not path.exists():
            return None
        info = json.loads(path.read_text())
        if not _alive(int(info["pid"])):
            return None
        sp = cls(workspace, info["models"], host=info["host"], port=int(info["port"]))
        sp.pid = int(info["pid"])
        try:
            if httpx.get(f"{sp.url}/v2/health/live", timeout=2).status_code == 200:
                return sp
        except httpx.HTTPError:
            pass
        return None

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

    def start(self, timeout: float = 90.0) -> "ServerProcess":
        import httpx

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
        self.pid = self.proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServeError(f"the server exited with code {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1.0).status_code == 200:
                    self.record.write_text(json.dumps({"pid": self.pid, "host": self.host, "port": self.port,
                                                       "models": self.models, "url": self.url}))
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise ServeError(f"the server did not become ready within {timeout:.0f} s; see {self.log_path}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.pid and _alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                if self.proc is not None:
                    if self.proc.poll() is not None:
                        break
                elif not _alive(self.pid):
                    break
                time.sleep(0.05)
            else:
                os.kill(self.pid, signal.SIGKILL)
            if self.proc is not None:
                self.proc.wait()
        if self.record.exists():
            try:
                if json.loads(self.record.read_text()).get("pid") == self.pid:
                    self.record.unlink()
            except (OSError, ValueError):
                pass
