"""Running the app on uvicorn (uvloop + httptools): in the foreground, in N worker
processes, or in a background thread of the current process (:class:`ServerHandle`).

With a gRPC port (``--grpc-port``, ``LOOPML_SERVE_GRPC_PORT``, ``serving.grpc_port``; off
by default) the same process also answers OIP v2 over gRPC (:mod:`loopml.serve.grpc`) on the
same host, on the same event loop and models as REST (:class:`WithGrpc`). With ``--workers
N`` every worker runs its own gRPC server on that port (SO_REUSEPORT: the kernel spreads
connections over them, as it does for the shared REST socket).

    from loopml.serve.server import ServerHandle
    with ServerHandle(workspace, ["fraud@champion"], port=0) as server:
        httpx.post(server.url + "/invocations", json={...})
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import sys
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


def _core(app: Any) -> Any:
    """The ServeApp under ASGI wrappers (tracing) that keep it as ``.app``."""
    while not hasattr(app, "oip_infer") and hasattr(app, "app"):
        app = app.app
    return app


class WithGrpc:
    """ASGI wrapper around the app's lifespan: once the models are loaded, start the gRPC
    server (when ``grpc_port`` is not None) and, when ``announce``, print the runtime each
    model got; on shutdown stop gRPC (``drain_timeout_s`` for in-flight RPCs) before the app
    flushes its prediction log. HTTP passes straight through."""

    def __init__(self, app: Any, host: str, grpc_port: int | None, *, reuse_port: bool = False,
                 announce: bool = False) -> None:
        self.app = app
        self.host = host
        self.grpc_port = grpc_port
        self.reuse_port = reuse_port
        self.announce = announce
        self.grpc: Any = None
        self._stopping: asyncio.Task | None = None

    def __getattr__(self, name: str) -> Any:  # fleet, settings, ... of the wrapped app
        return getattr(self.app, name)

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)

        async def on_send(message: dict) -> None:
            if message["type"] == "lifespan.startup.complete":
                try:
                    await self._started()
                except Exception as e:  # noqa: BLE001 - reported like a model that did not load
                    core = _core(self.app)
                    core.fleet.startup_error = e
                    await core.fleet.stop()
                    message = {"type": "lifespan.startup.failed", "message": str(e)}
            await send(message)

        async def on_receive() -> dict:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.stop_grpc()
            return message

        await self.app(scope, on_receive, on_send)

    async def _started(self) -> None:
        core = _core(self.app)
        if self.grpc_port is not None:
            from loopml.serve.grpc.service import GrpcServer

            self.grpc = GrpcServer(core, self.host, self.grpc_port, reuse_port=self.reuse_port)
            self.grpc_port = await self.grpc.start()
        if self.announce:
            for line in runtime_lines(core.fleet):
                print(line, file=sys.stderr, flush=True)
            if self.grpc is not None:
                print(f"loopml serve: gRPC (OIP v2) on {self.grpc.address}", file=sys.stderr, flush=True)

    def stop_grpc(self) -> asyncio.Future:
        """Start stopping gRPC (once); awaitable until in-flight RPCs are done or the grace is over."""
        if self._stopping is None:
            grace = _core(self.app).settings.drain_timeout_s
            coro = self.grpc.stop(grace) if self.grpc is not None else asyncio.sleep(0)
            self._stopping = asyncio.ensure_future(coro)
        return self._stopping


def runtime_lines(fleet: Any) -> list[str]:
    """One line per loaded model version: the runtime it got, and why not a better one."""
    lines = []
    for ep in fleet.endpoints.values():
        for dep in ep.deployments():
            rt = dep.runtime
            why = getattr(rt, "fallback_reason", None)
            lines.append(f"loopml serve: {ep.name} version {dep.version} ({dep.label}): runtime "
                         f"{getattr(rt, 'runtime_name', None) or 'unknown'}" + (f" (fell back: {why})" if why else "")
                         + f"; predicts {'in a thread' if dep.in_thread else 'on the event loop'} ({dep.placement_reason})")
    return lines


def _server(config: Any):
    """A uvicorn server that, on SIGINT/SIGTERM, starts draining gRPC at the moment REST stops
    accepting (not only after REST's in-flight requests are done)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            app = self.config.app
            if isinstance(app, WithGrpc):
                app.stop_grpc()
            await super().shutdown(sockets)

    return Server(config)


class ServerHandle:
    """A server in a background thread. ``port=0`` picks a free port; see :attr:`url`."""

    def __init__(self, workspace: Workspace, endpoints: list[EndpointSpec | str],
                 settings: ServeSettings | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 registry: Any = None, grpc_port: int | None = None) -> None:
        self.workspace = workspace
        self.endpoints = endpoints
        self.settings = settings
        self.host = host
        self.port = port
        self.grpc_port = grpc_port  # None: no gRPC; 0: a free port, known after start()
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
        if self.grpc_port is not None:
            self.app = WithGrpc(self.app, self.host, self.grpc_port)
        self._server = _server(uvicorn_config(self.app))
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
        if isinstance(self.app, WithGrpc):
            self.grpc_port = self.app.grpc_port
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
        port: int = 8080, workers: int = 1, log_level: str = "info", grpc_port: int | None = None,
        announce: bool = False) -> None:
    """Serve in the foreground until SIGINT/SIGTERM (graceful shutdown). ``grpc_port``: also
    OIP v2 over gRPC on that port; ``announce``: print each model's runtime once loaded."""
    import uvicorn

    from loopml.serve.app import build_app

    specs = [EndpointSpec.parse(e) if isinstance(e, str) else e for e in endpoints]
    if grpc_port:
        bind_socket(host, grpc_port).close()  # taken: one line now, not a failed start later
    elif grpc_port == 0 and workers > 1:
        raise ServeError("--grpc-port 0 with --workers > 1 would give each worker its own port; name one")
    if workers > 1:
        bind_socket(host, port).close()  # PortInUse before forking anything
        os.environ[CONFIG_ENV] = json.dumps({
            "home": str(workspace.home), "tracking_uri": workspace.tracking_uri_override,
            "endpoints": [str(s) for s in specs],
            "settings": {k: v for k, v in settings.to_dict().items() if k != "extra"},
            "host": host, "grpc_port": grpc_port, "announce": announce,
        })
        uvicorn.run("loopml.serve.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                    loop="uvloop", http=PROTOCOL, lifespan="on", log_level=log_level, access_log=False,
                    server_header=False, date_header=False, timeout_graceful_shutdown=30,
                    timeout_keep_alive=settings.keepalive_timeout_s)
        return
    sock = bind_socket(host, port)
    app = build_app(workspace, specs, settings)
    if grpc_port is not None or announce:
        app = WithGrpc(app, host, grpc_port, announce=announce)
    server = _server(uvicorn_config(app, log_level=log_level))
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
    app = as_worker(build_app(workspace, cfg["endpoints"], ServeSettings(**cfg["settings"]).validate()))
    if cfg.get("grpc_port") is not None or cfg.get("announce"):
        # each worker its own gRPC server on the shared port (SO_REUSEPORT)
        app = WithGrpc(app, cfg["host"], cfg.get("grpc_port"), reuse_port=True, announce=bool(cfg.get("announce")))
    return app
