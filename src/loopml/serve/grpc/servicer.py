"""The six RPCs of ``inference.GRPCInferenceService`` over a running :class:`ServeApp`.

ModelInfer goes through :meth:`ServeApp.oip_infer`, the core the REST route uses: the same
admission, deadline, decoding, traffic policy, batching, prediction log and shadowing; its
latency and status land in the same ``/metrics`` series (status as the HTTP equivalent).
A :class:`~loopml.errors.LoopmlError` becomes a gRPC status (:data:`STATUS`), with its
message; invocation metadata plays the part of HTTP headers (``authorization``,
``x-request-id``, ``x-loopml-deadline-ms``, ``ab`` sticky keys), and the gRPC deadline, when
the client set one, is the request's deadline unless ``x-loopml-deadline-ms`` says otherwise.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc

import loopml
from loopml.errors import LoopmlError, ModelNotFound, Overloaded
from loopml.serve import auth
from loopml.serve.grpc import codec
from loopml.serve.protocols import oip_v2

log = logging.getLogger("loopml.serve.grpc")
DEADLINE_HEADER = "x-loopml-deadline-ms"

_C = grpc.StatusCode
# HTTP status of a LoopmlError -> gRPC status code (the usual Google API correspondence)
STATUS = {400: _C.INVALID_ARGUMENT, 401: _C.UNAUTHENTICATED, 403: _C.PERMISSION_DENIED, 404: _C.NOT_FOUND,
          408: _C.DEADLINE_EXCEEDED, 409: _C.FAILED_PRECONDITION, 413: _C.RESOURCE_EXHAUSTED,
          415: _C.INVALID_ARGUMENT, 422: _C.INVALID_ARGUMENT, 499: _C.CANCELLED, 503: _C.UNAVAILABLE,
          504: _C.DEADLINE_EXCEEDED}


def status_code(error: LoopmlError) -> grpc.StatusCode:
    return STATUS.get(error.http_status, _C.INVALID_ARGUMENT if error.http_status < 500 else _C.INTERNAL)


class InferenceServicer:
    """Answers the RPCs from ``app`` (a started :class:`~loopml.serve.app.ServeApp`)."""

    def __init__(self, app: Any, pb2: Any) -> None:
        self.app = app
        self.pb2 = pb2

    # -- health and metadata ------------------------------------------------------------------

    async def ServerLive(self, request, context):  # noqa: N802 - names are the proto's
        return self.pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):  # noqa: N802
        return self.pb2.ServerReadyResponse(ready=self.app.fleet.ready)

    async def ServerMetadata(self, request, context):  # noqa: N802
        meta = oip_v2.server_metadata(loopml.__version__)
        return self.pb2.ServerMetadataResponse(name=meta["name"], version=meta["version"],
                                               extensions=meta.get("extensions", []))

    async def ModelReady(self, request, context):  # noqa: N802
        try:
            ep = self._endpoint(request.name)
            dep = self.app._pick_version(ep, request.version) if request.version else ep.primary
        except LoopmlError as e:
            await _abort(context, e)
        return self.pb2.ModelReadyResponse(ready=dep is not None)

    async def ModelMetadata(self, request, context):  # noqa: N802
        try:
            ep = self._endpoint(request.name)
            dep = self.app._pick_version(ep, request.version) if request.version else ep.primary
            if dep is None:
                raise ModelNotFound(ep.name)
            versions = [d.version for d in ep.deployments()] if not request.version else [dep.version]
            return codec.metadata_response(self.pb2, oip_v2.model_metadata(dep.runtime, versions))
        except LoopmlError as e:
            await _abort(context, e)

    # -- inference ----------------------------------------------------------------------------

    async def ModelInfer(self, request, context):  # noqa: N802
        app = self.app
        metrics = app.metrics
        t0 = time.perf_counter()
        metrics.inflight += 1
        labels = ["", "", ""]
        status = 200
        try:
            ep = self._endpoint(request.model_name)
            headers = _headers(context)
            auth.check_inference(app.settings.inference_token, headers)

            async def payload():
                return codec.request_payload(request)

            body, dep, rid = await app.oip_infer(ep, request.model_version or None, headers, labels, payload,
                                                 context.cancelled)
            context.set_trailing_metadata((("x-loopml-model", ep.name), ("x-loopml-model-version", dep.version),
                                           ("x-loopml-variant", dep.label), ("x-request-id", rid)))
            return codec.infer_response(self.pb2, body, raw=bool(request.raw_input_contents))
        except LoopmlError as e:
            status = e.http_status
            await _abort(context, e)
        except Exception as e:  # noqa: BLE001 - never a dead stream; log and answer
            log.exception("unhandled error in ModelInfer for %r", request.model_name)
            status = 500
            await context.abort(_C.INTERNAL, f"internal error: {type(e).__name__}")
        finally:
            metrics.inflight -= 1
            if labels[0]:
                metrics.observe(labels[0], labels[1], labels[2], status, time.perf_counter() - t0)

    def _endpoint(self, name: str):
        ep = self.app.fleet.endpoints.get(name)
        if ep is None:
            raise ModelNotFound(name or "(no model_name given)")
        return ep


def _headers(context) -> dict[str, str]:
    """Invocation metadata as lower-case HTTP-style headers, plus the gRPC deadline."""
    headers = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    if DEADLINE_HEADER not in headers:
        remaining = context.time_remaining()
        if remaining is not None and remaining < 1e8:  # no deadline reads as None (or a huge number)
            headers[DEADLINE_HEADER] = repr(max(remaining * 1000.0, 0.001))
    return headers


async def _abort(context, error: LoopmlError):
    trailers = (("retry-after", str(error.retry_after)),) if isinstance(error, Overloaded) else ()
    await context.abort(status_code(error), str(error), trailers)
