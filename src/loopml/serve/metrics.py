"""Prometheus metrics of one server process, on a registry of its own.

Hot-path cost is one cached child lookup and an ``inc``/``observe``; gauges that
describe state (queue depth, in-flight, prediction-log lag) are read from the fleet
only when ``/metrics`` is scraped, and so are the monitoring gauges (drift, quality, live
metrics) that :func:`loopml.monitor.metrics.publish_window_metrics` wrote to the workspace.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("loopml_requests", "Requests answered, by model, version, variant and status.",
                                ["model", "version", "variant", "status"], registry=r)
        self.latency = Histogram("loopml_request_duration_seconds", "Request latency, body read to response sent.",
                                 ["model", "version", "variant", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("loopml_batch_size_rows", "Rows per predict call after micro-batching.",
                                    ["model", "version"], buckets=BATCH_BUCKETS, registry=r)
        self.load_time = Gauge("loopml_model_load_seconds", "Seconds to load and warm a model version.",
                               ["model", "version"], registry=r)
        self.shadow_errors = Counter("loopml_shadow_errors", "Shadow predictions that failed or were dropped.",
                                     ["model"], registry=r)
        self.inflight = 0
        self._children: dict[tuple, tuple[Any, Any]] = {}
        self._batch_children: dict[tuple, Any] = {}
        self.fleet: Any = None
        self.admission: Any = None  # loopml.serve.admission.Admission, set by the app
        r.register(_StateCollector(self))
        from loopml.monitor.metrics import MonitorCollector

        self.monitor = MonitorCollector()  # drift, quality, live metrics published by monitoring
        r.register(self.monitor)
        self._monitor_files: Any = None

    def observe(self, model: str, version: str, variant: str, status: int, seconds: float) -> None:
        key = (model, version, variant, status)
        pair = self._children.get(key)
        if pair is None:
            labels = (model, version, variant, str(status))
            pair = (self.requests.labels(*labels), self.latency.labels(*labels))
            self._children[key] = pair
        pair[0].inc()
        pair[1].observe(seconds)

    def batch(self, model: str, version: str, rows: int) -> None:
        key = (model, version)
        child = self._batch_children.get(key)
        if child is None:
            child = self._batch_children[key] = self.batch_size.labels(model, version)
        child.observe(rows)

    def model_loaded(self, model: str, version: str, seconds: float) -> None:
        self.load_time.labels(model, version).set(seconds)

    def render(self) -> bytes:
        fleet = self.fleet
        if fleet is not None:
            if self._monitor_files is None:
                from loopml.monitor.metrics import MonitorFiles

                self._monitor_files = MonitorFiles(fleet.workspace.home, self.monitor)
            self._monitor_files.refresh(list(fleet.endpoints))
        return generate_latest(self.registry)


class _StateCollector:
    """Gauges read from the fleet at scrape time."""

    def __init__(self, metrics: ServeMetrics) -> None:
        self.metrics = metrics

    def describe(self):
        return []

    def collect(self):
        inflight = GaugeMetricFamily("loopml_inflight_requests", "Requests being handled now.")
        inflight.add_metric([], self.metrics.inflight)
        yield inflight
        fleet = self.metrics.fleet
        queue = GaugeMetricFamily("loopml_queue_rows", "Rows waiting in a model's batching queue.",
                                  labels=["model", "version", "variant"])
        ready = GaugeMetricFamily("loopml_model_ready", "1 when a model version is loaded and serving.",
                                  labels=["model", "version", "variant"])
        lag = GaugeMetricFamily("loopml_prediction_log_lag_seconds",
                                "Seconds the prediction log is behind (0 when caught up).", labels=["model"])
        pending = GaugeMetricFamily("loopml_prediction_log_pending_rows", "Predictions not yet written.",
                                    labels=["model"])
        dropped = GaugeMetricFamily("loopml_prediction_log_dropped_rows",
                                    "Predictions not logged because the log queue was full.", labels=["model"])
        if fleet is not None:
            for ep in list(fleet.endpoints.values()):
                for d in ep.deployments():
                    labels = [ep.name, d.version, d.label]
                    queue.add_metric(labels, d.batcher.queued_rows)
                    ready.add_metric(labels, 1)
            for name, rec in list(fleet.recorders.items()):
                w = rec.writer
                lag.add_metric([name], rec.lag_seconds)
                pending.add_metric([name], rec.pending + (w.pending if w is not None else 0))
                dropped.add_metric([name], rec.dropped + (w.dropped if w is not None else 0))
        yield from (queue, ready, lag, pending, dropped)
        admission = self.metrics.admission
        if admission is not None:  # issue #9: admission control
            per_model = GaugeMetricFamily("loopml_model_inflight_requests", "Requests a model is handling now "
                                          "(admitted, not yet answered).", labels=["model"])
            for name, n in list(admission.inflight.items()):
                per_model.add_metric([name], n)
            shed = CounterMetricFamily("loopml_shed_requests", "Requests refused or dropped unpredicted, by reason: "
                                       "inflight (503, over max_inflight), client_gone, deadline (504).",
                                       labels=["model", "reason"])
            for (name, reason), n in list(admission.dropped.items()):
                shed.add_metric([name, reason], n)
            yield from (per_model, shed)
