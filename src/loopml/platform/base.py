"""What every platform component shares: free ports, detached processes, health waits, secrets."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from loopml.errors import PlatformComponentFailed
from loopml.procs import pid_alive

SECRET_MODE = 0o600


def free_port() -> int:
    """A port nothing listens on right now (the kernel picks it; the engine binds it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_secret(path: Path, nbytes: int = 24) -> str:
    """A random hex secret written to ``path`` with mode 0600 (created private, never widened);
    an existing file is reused so a restart keeps its credentials."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_MODE)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 before any byte lands (for files holding secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SECRET_MODE)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def spawn(argv: list[str], log: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
    """Start ``argv`` in its own session (so it outlives the CLI that started it and a signal
    to our terminal does not reach it), output appended to ``log``; returns its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True)
    return proc.pid


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment without loopml's, MLflow's and AWS's own variables (an engine gets only
    the settings we give it), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LOOPML_", "AWS_", "PG"))}
    env.update(extra or {})
    return env


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def wait_until(component: str, ready: Callable[[], bool], *, pid: int | None, log: Path | None,
               timeout: float) -> None:
    """Poll ``ready`` until it holds; fail fast with the log's tail when the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if pid is not None and not pid_alive(pid):
            raise PlatformComponentFailed(component, "exited while starting", log_tail(log))
        time.sleep(0.2)
    raise PlatformComponentFailed(component, f"not healthy within {timeout:.0f} s", log_tail(log))


def log_tail(log: Path | None, chars: int = 1500) -> str:
    if log is None or not log.exists():
        return ""
    return log.read_text(errors="replace")[-chars:]


def stop_pid(pid: int | None, timeout: float = 15.0) -> None:
    """SIGTERM ``pid``'s process group (the engine and any children), SIGKILL after ``timeout``."""
    if not pid or not pid_alive(pid):
        _reap(pid)
        return
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    _signal_group(pid, signal.SIGKILL)
    for _ in range(50):
        _reap(pid)
        if not pid_alive(pid):
            return
        time.sleep(0.1)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(os.getpgid(pid), sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _reap(pid: int | None) -> None:
    """Collect ``pid`` if it is our child (started in this process), so it is not left a zombie."""
    if not pid:
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


class Engine:
    """A server process one platform component owns: launched into its own session with its
    output in ``<root>/<component>.log``, waited for, and stopped with its process group.
    Subclasses set ``component``, ``root`` and ``pid`` and say when they are ready."""

    component = "engine"
    root: Path
    pid: int | None = None

    @property
    def log(self) -> Path:
        return self.root / f"{self.component}.log"

    def _launch(self, argv: list[str], ready: Callable[[], bool], *, timeout: float,
                env: dict[str, str] | None = None) -> None:
        self.pid = spawn(argv, self.log, env=clean_env(env), cwd=self.root)
        try:
            wait_until(self.component, ready, pid=self.pid, log=self.log, timeout=timeout)
        except BaseException:
            self.stop()  # a half-started engine is not recorded anywhere: do not leave it running
            raise

    def stop(self) -> None:
        stop_pid(self.pid)
