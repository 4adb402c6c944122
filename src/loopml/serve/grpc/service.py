"""The grpc.aio server's life: start it on the event loop that runs the REST app, stop it
with a grace period (in-flight RPCs finish, new ones are refused).

Why grpc.aio and not grpc's thread-pool server with a hand-off to the loop per RPC: that was
built and measured (commit 84ed271, ``benchmarks/grpc_bench.py --servers threads,aio``): per
RPC it cost the server 2.6-3.4x the CPU of a REST request in the same rounds, against 2.4-2.9x
for grpc.aio, its threads contending for the GIL at every hand-off (docs/benchmarks.md, gRPC
vs REST).
"""

from __future__ import annotations

from typing import Any

from loopml.errors import ServeError


class GrpcServer:
    """``inference.GRPCInferenceService`` for ``app`` on ``host:port`` (0: a free port, see
    :attr:`port` after :meth:`start`). ``reuse_port`` lets sibling worker processes share the
    port (SO_REUSEPORT, the kernel spreads connections); off, a taken port is an error."""

    def __init__(self, app: Any, host: str, port: int, *, reuse_port: bool = False) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        self._server: Any = None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def start(self) -> int:
        """Bind and start answering on the running loop; returns the port."""
        import grpc

        from loopml.serve.grpc import messages
        from loopml.serve.grpc.servicer import InferenceServicer

        pb2, pb2_grpc = messages.load()
        from loopml.serve.settings import grpc_options  # the REST limits (body, headers, idle, streams)

        server = grpc.aio.server(options=[("grpc.so_reuseport", int(self.reuse_port)),
                                          *grpc_options(self.app.settings)])
        pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self.app, pb2), server)
        try:
            bound = server.add_insecure_port(self.address)
        except RuntimeError:
            bound = 0
        if not bound:  # older grpcio returns 0, newer raises
            raise ServeError(f"gRPC port {self.port} on {self.host} is already in use; pick another with "
                             "--grpc-port (LOOPML_SERVE_GRPC_PORT, serving.grpc_port)")
        self.port = bound
        await server.start()
        self._server = server
        return self.port

    async def stop(self, grace: float) -> None:
        """Refuse new RPCs, let in-flight ones finish for up to ``grace`` seconds."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace)
