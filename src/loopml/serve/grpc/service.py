"""The gRPC server's life: start it beside the event loop that runs the REST app, stop it
with a grace period (in-flight RPCs finish, new ones are refused).

Two servers answer the same RPCs through :meth:`ServeApp.oip_infer`: grpc.aio on the loop
itself (:mod:`.servicer`, the default) and, for comparison, grpc's thread-pool server
(:mod:`.threaded`: protobuf work on its threads, one hand-off to the loop per RPC;
``LOOPML_SERVE_GRPC_SERVER=threads``; ``benchmarks/grpc_bench.py --servers threads,aio`` runs both).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from loopml.errors import ServeError

MODE_ENV = "LOOPML_SERVE_GRPC_SERVER"
MODES = ("aio", "threads")
# grpc's pool threads mostly wait for the loop's answer; more RPCs than threads queue in grpc
# (their deadline runs meanwhile), so this bounds threads, not admission (max_inflight does that).
THREADS = 32


def server_mode() -> str:
    mode = os.environ.get(MODE_ENV, "aio").strip().lower() or "aio"
    if mode not in MODES:
        raise ServeError(f"{MODE_ENV}={mode!r} is not a gRPC server kind; use one of {', '.join(MODES)}")
    return mode


class GrpcServer:
    """``inference.GRPCInferenceService`` for ``app`` on ``host:port`` (0: a free port, see
    :attr:`port` after :meth:`start`). ``reuse_port`` lets sibling worker processes share the
    port (SO_REUSEPORT, the kernel spreads connections); off, a taken port is an error."""

    def __init__(self, app: Any, host: str, port: int, *, reuse_port: bool = False, mode: str | None = None) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        self.mode = mode  # None: server_mode() at start
        self._server: Any = None
        self._pool: Any = None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def start(self) -> int:
        """Bind and start answering on the running loop; returns the port."""
        import grpc

        from loopml.serve.grpc import messages
        from loopml.serve.grpc.servicer import InferenceServicer

        self.mode = self.mode or server_mode()
        pb2, pb2_grpc = messages.load()
        cap = self.app.settings.max_body_bytes  # the same request size cap as REST
        options = [("grpc.so_reuseport", int(self.reuse_port)), ("grpc.max_receive_message_length", cap),
                   ("grpc.max_send_message_length", -1)]
        if self.mode == "aio":
            server = grpc.aio.server(options=options)
            servicer: Any = InferenceServicer(self.app, pb2)
        else:
            from concurrent.futures import ThreadPoolExecutor

            from loopml.serve.grpc.threaded import ThreadedServicer

            self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="loopml-grpc")
            server = grpc.server(self._pool, options=options)
            servicer = ThreadedServicer(self.app, pb2, asyncio.get_running_loop())
        pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
        try:
            bound = server.add_insecure_port(self.address)
        except RuntimeError:
            bound = 0
        if not bound:  # older grpcio returns 0, newer raises
            self._shutdown_pool()
            raise ServeError(f"gRPC port {self.port} on {self.host} is already in use; pick another with "
                             "--grpc-port (LOOPML_SERVE_GRPC_PORT, serving.grpc_port)")
        self.port = bound
        if self.mode == "aio":
            await server.start()
        else:
            server.start()
        self._server = server
        return self.port

    async def stop(self, grace: float) -> None:
        """Refuse new RPCs, let in-flight ones finish for up to ``grace`` seconds."""
        if self._server is not None:
            server, self._server = self._server, None
            if self.mode == "aio":
                await server.stop(grace)
            else:  # the loop keeps running meanwhile: in-flight RPCs are waiting for it
                await asyncio.to_thread(server.stop(grace).wait)
                self._shutdown_pool()

    def _shutdown_pool(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=False)
