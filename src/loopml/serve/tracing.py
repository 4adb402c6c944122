"""OpenTelemetry traces, only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (no cost otherwise).

Without the variable this module imports nothing from OpenTelemetry and the app is
returned unwrapped, so requests pay nothing. With it, :func:`maybe_trace` wraps the app
in :class:`TracingMiddleware`, which exports over OTLP/HTTP (protobuf) through a
``BatchSpanProcessor``, configured by the standard variables (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_*``, ``OTEL_BSP_*``, ``OTEL_PROPAGATORS``).

Spans, per HTTP request (health probes and ``/metrics`` scrapes are not traced):

- ``POST /v2/models/{model}/infer`` (SERVER): method, route, path and status, plus
  ``loopml.model``, ``loopml.model.version``, ``loopml.variant``, ``loopml.rows`` and
  ``loopml.request.id`` on inference requests; a W3C ``traceparent`` header makes it a
  child of the caller's span.
- ``loopml.predict`` (INTERNAL, child): the time the rows spent in the batcher's queue
  plus the batch prediction they were part of.

Spans still queued are exported on ASGI lifespan shutdown (graceful stop / SIGTERM), waiting
at most ``OTEL_BSP_EXPORT_TIMEOUT`` (default 10 s) when the collector is unreachable.
OpenTelemetry is optional (``pip install 'loopml[otel]'``); when the variable is set but
the packages are missing, the server logs a hint and runs untraced.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

log = logging.getLogger("loopml.serve")

ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# probes and scrapes arrive every few seconds and say nothing about inference
UNTRACED_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/ping", "/health", "/metrics"})


def tracing_enabled() -> bool:
    """True when an OTLP endpoint is configured (and the SDK is not disabled)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(os.environ.get(name) for name in ENDPOINT_ENVS)


def maybe_trace(app: Any) -> Any:
    """``app`` wrapped in :class:`TracingMiddleware` when tracing is configured, else ``app``."""
    if not tracing_enabled():
        return app
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed; "
                    "pip install 'loopml[otel]' to export traces")
        return app
    import loopml

    resource = Resource.create({"service.version": loopml.__version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "loopml-serve"}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    traced = TracingMiddleware(app, provider)
    app.tracing = traced  # the app's hook around predict (see ServeApp._oip_infer)
    return traced


class TracingMiddleware:
    """ASGI wrapper: one SERVER span per HTTP request; flushes spans on lifespan shutdown."""

    def __init__(self, app: Any, provider: Any) -> None:
        from opentelemetry import propagate, trace

        self.app = app
        self.provider = provider
        self.tracer = provider.get_tracer("loopml.serve")
        self._extract = propagate.extract
        self._current_span = trace.get_current_span
        self._server = trace.SpanKind.SERVER
        self._error = trace.Status(trace.StatusCode.ERROR)

    def __getattr__(self, name: str) -> Any:  # fleet, metrics, settings of the wrapped app
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            return await self.app(scope, receive, self._flushing_send(send))
        if kind != "http" or scope["path"] in UNTRACED_PATHS:
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        route = _route(path)
        parent = self._extract({k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())})
        attributes = {"http.request.method": method, "url.path": path}
        if route is not None:
            attributes["http.route"] = route
        name = f"{method} {route}" if route is not None else method
        with self.tracer.start_as_current_span(name, context=parent, kind=self._server,
                                               attributes=attributes) as span:

            async def traced_send(message):
                if message["type"] == "http.response.start":
                    status = message["status"]
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_attribute("error.type", str(status))
                        span.set_status(self._error)
                await send(message)

            await self.app(scope, receive, traced_send)

    async def predict(self, dep: Any, rows: Any, deadline: float | None, request_id: str) -> Any:
        """``dep.predict(rows, deadline)`` in a child span; labels the request's span."""
        attributes = {"loopml.model": dep.name, "loopml.model.version": dep.version,
                      "loopml.variant": dep.label, "loopml.rows": rows.n}
        request_span = self._current_span()
        request_span.set_attributes(attributes)
        request_span.set_attribute("loopml.request.id", request_id)
        with self.tracer.start_as_current_span("loopml.predict", attributes=attributes):
            return await dep.predict(rows, deadline)

    def _flushing_send(self, send):
        async def flushing_send(message):
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                # after the app has drained every request span has ended: export them all, but
                # never hold the shutdown longer than one export may take (collector down)
                flush = threading.Thread(target=self.provider.shutdown, name="loopml-otel-flush", daemon=True)
                flush.start()
                await asyncio.to_thread(flush.join, _flush_timeout_s())
            await send(message)

        return flushing_send


def _flush_timeout_s() -> float:
    try:
        return max(0.0, float(os.environ.get("OTEL_BSP_EXPORT_TIMEOUT", "10000")) / 1000.0)
    except ValueError:
        return 10.0


def _route(path: str) -> str | None:
    """The low-cardinality route template of ``path`` (model names replaced), None if unknown."""
    if path.startswith("/v2/models/"):
        parts = path[11:].split("/")
        route = ["/v2/models/{model}"]
        rest = parts[1:]
        if len(rest) >= 2 and rest[0] == "versions":
            route.append("/versions/{version}")
            rest = rest[2:]
        if len(rest) == 1 and rest[0] in ("infer", "ready"):
            route.append("/" + rest[0])
        elif rest:
            return None
        return "".join(route)
    if path in ("/invocations", "/v2", "/version", "/openapi.json"):
        return path
    return None
