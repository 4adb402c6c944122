"""The six RPCs on grpc's thread-pool server, handing each inference to the app's event loop.

Why not grpc.aio: its completion events are polled on a thread of its own and handed to the
asyncio loop, several loop round trips per RPC (request, message, status), each queued behind
whatever else the loop is doing; under concurrency gRPC answered a fraction of what REST did
on the same loop (docs/benchmarks.md, gRPC vs REST). Here grpc's own threads receive the RPC,
parse the protobuf and decode the tensors (:mod:`.codec`) and build the response, off the loop;
the loop sees one hand-off per RPC (:func:`asyncio.run_coroutine_threadsafe`) running
:meth:`ServeApp.oip_infer` -- the same admission, deadline, routing, batching, prediction log
and shadowing as REST, and, where the app predicts in a thread, the same off-loop predict.
Metrics are updated on the loop, as REST's are (they are not thread-safe).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from typing import Any

import grpc

import loopml
from loopml.errors import LoopmlError, ModelNotFound, Overloaded, ServeError
from loopml.serve import auth
from loopml.serve.grpc import codec
from loopml.serve.grpc.servicer import headers_of, status_code
from loopml.serve.protocols import oip_v2

log = logging.getLogger("loopml.serve.grpc")
# How often a thread waiting for the loop checks that the loop still runs: a server stopped
# mid-RPC must not leave a pool thread blocked forever (it would hold up interpreter exit).
_POLL_S = 1.0


class ThreadedServicer:
    """Answers the RPCs from ``app`` on grpc's threads; inference runs on ``loop`` (the one
    serving REST, running while this server runs)."""

    def __init__(self, app: Any, pb2: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.pb2 = pb2
        self.loop = loop

    # -- health and metadata: read-only looks at the fleet, answered on the grpc thread ----------

    def ServerLive(self, request, context):  # noqa: N802 - names are the proto's
        return self.pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):  # noqa: N802
        return self.pb2.ServerReadyResponse(ready=self.app.fleet.ready)

    def ServerMetadata(self, request, context):  # noqa: N802
        meta = oip_v2.server_metadata(loopml.__version__)
        return self.pb2.ServerMetadataResponse(name=meta["name"], version=meta["version"],
                                               extensions=meta.get("extensions", []))

    def ModelReady(self, request, context):  # noqa: N802
        try:
            ep = self._endpoint(request.name)
            dep = self.app._pick_version(ep, request.version) if request.version else ep.primary
        except LoopmlError as e:
            _abort(context, e)
        return self.pb2.ModelReadyResponse(ready=dep is not None)

    def ModelMetadata(self, request, context):  # noqa: N802
        try:
            ep = self._endpoint(request.name)
            dep = self.app._pick_version(ep, request.version) if request.version else ep.primary
            if dep is None:
                raise ModelNotFound(ep.name)
            versions = [d.version for d in ep.deployments()] if not request.version else [dep.version]
            return codec.metadata_response(self.pb2, oip_v2.model_metadata(dep.runtime, versions))
        except LoopmlError as e:
            _abort(context, e)

    # -- inference ----------------------------------------------------------------------------

    def ModelInfer(self, request, context):  # noqa: N802
        headers = headers_of(context)
        try:  # decoded here, off the loop; a decoding error is raised after admission, as REST's
            decoded, bad = codec.request_payload(request), None
        except LoopmlError as e:
            decoded, bad = None, e
        try:
            future = asyncio.run_coroutine_threadsafe(
                self._infer(request.model_name, request.model_version or None, headers, decoded, bad,
                            lambda: not context.is_active()), self.loop)
        except RuntimeError:  # the loop is closed: the server is going away
            _abort(context, ServeError("the server is shutting down"))
        try:
            body, ep_name, dep, rid = self._wait(future)
        except LoopmlError as e:
            _abort(context, e)
        except Exception as e:  # noqa: BLE001 - never a dead stream; logged on the loop
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}")
        context.set_trailing_metadata((("x-loopml-model", ep_name), ("x-loopml-model-version", dep.version),
                                       ("x-loopml-variant", dep.label), ("x-request-id", rid)))
        return codec.infer_response(self.pb2, body, raw=bool(request.raw_input_contents))

    def _wait(self, future: concurrent.futures.Future):
        while True:
            try:
                return future.result(_POLL_S)
            except concurrent.futures.TimeoutError:
                if self.loop.is_closed() or not self.loop.is_running():
                    future.cancel()
                    raise ServeError("the server stopped before answering") from None

    async def _infer(self, name: str, version: str | None, headers: dict, decoded: Any, bad: Any, gone):
        """On the loop: what :meth:`servicer.InferenceServicer.ModelInfer` does, minus the
        protobuf work, which the calling thread has done."""
        app = self.app
        metrics = app.metrics
        t0 = time.perf_counter()
        metrics.inflight += 1
        labels = ["", "", ""]
        status = 200
        try:
            ep = self._endpoint(name)
            auth.check_inference(app.settings.inference_token, headers)

            async def payload():
                if bad is not None:
                    raise bad
                return decoded

            body, dep, rid = await app.oip_infer(ep, version, headers, labels, payload, gone)
            return body, ep.name, dep, rid
        except LoopmlError as e:
            status = e.http_status
            raise
        except Exception:
            log.exception("unhandled error in ModelInfer for %r", name)
            status = 500
            raise
        finally:
            metrics.inflight -= 1
            if labels[0]:
                metrics.observe(labels[0], labels[1], labels[2], status, time.perf_counter() - t0)

    def _endpoint(self, name: str):
        ep = self.app.fleet.endpoints.get(name)
        if ep is None:
            raise ModelNotFound(name or "(no model_name given)")
        return ep


def _abort(context, error: LoopmlError):
    """End the RPC with ``error``'s status (``context.abort`` raises, so this never returns)."""
    if isinstance(error, Overloaded):
        context.set_trailing_metadata((("retry-after", str(error.retry_after)),))
    context.abort(status_code(error), str(error))
