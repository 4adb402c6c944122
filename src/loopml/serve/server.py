"""Running the app on uvicorn (uvloop + httptools): in the foreground, in N worker
processes, or in a background thread of the current process (:class:`ServerHandle`).

    from loopml.serve.server import ServerHandle
    with ServerHandle(workspace, ["fraud@champion"], port=0) as server:
        httpx.post(server.url + "/invocations", json={...})
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
from typing import Any

from loopml.config import Workspace
from loopml.errors import LoopmlError, PortInUse, ServeError
from loopml.serve.http import PROTOCOL
from loopml.serve.settings import EndpointSpec, ServeSettings, check_port

CONFIG_ENV = "LOOPML_SERVE_CONFIG"


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; PortInUse when taken, ServeError when out of range."""
    check_port(port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise PortInUse(host, port) from None
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app: Any, **kw):
    """uvicorn settings for ``app``: uvloop, httptools with loopml's limits (:mod:`.limits`),
    the keep-alive idle timeout of the app's settings."""
    import uvicorn

    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    settings = getattr(app, "settings", None) or ServeSettings()
    return uvicorn.Config(app, loop=loop, http=PROTOCOL, lifespan="on", log_level=kw.pop("log_level", "warning"),
                          access_log=False, timeout_graceful_shutdown=kw.pop("timeout_graceful_shutdown", 30),
                          timeout_keep_alive=settings.keepalive_timeout_s, server_header=False, date_header=False, **kw)


def _startup_error(app: Any) -> BaseException | None:
    return getattr(getattr(app, "fleet", None), "startup_error", None)


class ServerHandle:
    """A server in a background thread. ``port=0`` picks a free port; see :attr:`url`."""

    def __init__(self, workspace: Workspace, endpoints: list[EndpointSpec | str],
                 settings: ServeSettings | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 registry: Any = None) -> None:
        self.workspace = workspace
        self.endpoints = endpoints
        self.settings = settings
        self.host = host
        self.port = port
        self.registry = registry
        self.app: Any = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def fleet(self):
        return self.app.fleet

    def start(self, timeout: float = 120.0) -> "ServerHandle":
        """Bind, load every model, start answering; raises the startup error if any."""
        import uvicorn

        from loopml.serve.app import build_app

        sock = bind_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        self.app = build_app(self.workspace, self.endpoints, self.settings, registry=self.registry)
        self._server = uvicorn.Server(uvicorn_config(self.app))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"loopml-serve-{self.port}", daemon=True)
        self._thread.start()
        end = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > end:
                sock.close()
                self._thread.join(5)
                err = _startup_error(self.app)
                if isinstance(err, LoopmlError):
                    raise err
                raise ServeError(f"server on {self.url} failed to start: {err or 'timeout'}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Graceful: stop accepting, finish in-flight requests, flush the prediction log."""
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> "ServerHandle":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run(workspace: Workspace, endpoints: list[str], settings: ServeSettings, *, host: str = "127.0.0.1",
        port: int = 8080, workers: int = 1, log_level: str = "info") -> None:
    """Serve in the foreground until SIGINT/SIGTERM (graceful shutdown)."""
    import uvicorn

    from loopml.serve.app import build_app

    specs = [EndpointSpec.parse(e) if isinstance(e, str) else e for e in endpoints]
    if workers > 1:
        bind_socket(host, port).close()  # PortInUse before forking anything
        os.environ[CONFIG_ENV] = json.dumps({
            "home": str(workspace.home), "tracking_uri": workspace.tracking_uri_override,
            "endpoints": [str(s) for s in specs],
            "settings": {k: v for k, v in settings.to_dict().items() if k != "extra"},
        })
        uvicorn.run("loopml.serve.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                    loop="uvloop", http=PROTOCOL, lifespan="on", log_level=log_level, access_log=False,
                    server_header=False, date_header=False, timeout_graceful_shutdown=30,
                    timeout_keep_alive=settings.keepalive_timeout_s)
        return
    sock = bind_socket(host, port)
    app = build_app(workspace, specs, settings)
    server = uvicorn.Server(uvicorn_config(app, log_level=log_level))
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the
    # handlers it found; no-op ones let a clean shutdown end with exit code 0.
    _quiet_signals()
    server.run(sockets=[sock])
    err = _startup_error(app)
    if err is not None:
        if isinstance(err, LoopmlError):
            raise err
        raise ServeError(f"server failed to start: {err}")


def _quiet_signals() -> None:
    import signal

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: None)


def app_from_env():
    """ASGI app factory for ``--workers N`` (each worker process builds its own)."""
    from loopml.serve.app import build_app

    cfg = json.loads(os.environ[CONFIG_ENV])
    workspace = Workspace.from_env(cfg["home"], cfg.get("tracking_uri")).init()
    from loopml.serve.workers import as_worker  # dies with the master; admin changes reach every worker
    return as_worker(build_app(workspace, cfg["endpoints"], ServeSettings(**cfg["settings"]).validate()))
