"""OpenTelemetry traces, only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (no cost otherwise).

OpenTelemetry is imported lazily; without the SDK and OTLP exporter installed
(``pip install 'loopml[otel]'``) the server logs a hint and runs untraced.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("loopml.serve")


def maybe_trace(app: Any) -> Any:
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return app
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed; "
                    "pip install 'loopml[otel]' to export traces")
        return app
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "loopml-serve")}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return TracingMiddleware(app, provider.get_tracer("loopml.serve"))


class TracingMiddleware:
    """One server span per HTTP request, with method, route and status."""

    def __init__(self, app: Any, tracer: Any) -> None:
        self.app = app
        self.tracer = tracer

    def __getattr__(self, name: str) -> Any:  # fleet, metrics, settings of the wrapped app
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from opentelemetry.trace import SpanKind

        with self.tracer.start_as_current_span(f"{scope['method']} {scope['path']}", kind=SpanKind.SERVER) as span:
            span.set_attribute("http.request.method", scope["method"])
            span.set_attribute("url.path", scope["path"])

            async def traced_send(message):
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                    for k, v in message.get("headers", []):
                        if k.startswith(b"x-loopml-"):
                            span.set_attribute(k.decode(), v.decode())
                await send(message)

            await self.app(scope, receive, traced_send)
