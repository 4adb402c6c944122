"""Monitoring results as flat metrics (for alert rules) and Prometheus gauge samples.

Metric names used by alert rules (``AlertRule.metric``):

* ``drift.detected`` (1/0), ``drift.share``, ``drift.feature.<name>`` (the deciding
  statistic), ``drift.feature.<name>.drifted`` (1/0), ``drift.output.<name>``;
* ``quality.<what>.<column>`` (``missing_rate``, ``out_of_range_rate``, ``unseen_rate``,
  ``type_violation_rate``), ``quality.volume_ratio``, ``quality.rows``;
* ``performance.<metric>`` (``roc_auc``, ``f1``, ``rmse``...).

:func:`gauge_samples` maps the same numbers to Prometheus series (see :data:`GAUGES`),
and :class:`MonitorCollector` serves the latest ones from a server's ``/metrics``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from loopml.monitor.quality import QualityReport
    from loopml.monitor.result import DriftReport

GAUGES = {
    "loopml_drift_detected": "Dataset drift verdict of the latest window (1 drifted, 0 not)",
    "loopml_drift_share": "Share of checked columns that drifted in the latest window",
    "loopml_drift_score": "Drift statistic per column (the method that decided)",
    "loopml_drift_feature_drifted": "Drift verdict per column (1 drifted, 0 not)",
    "loopml_quality": "Data quality measure per column of the latest window",
    "loopml_quality_volume_ratio": "Rows in the latest window over the expected rows",
    "loopml_live_metric": "Model metric on labelled predictions of the latest window",
    "loopml_monitor_published_timestamp_seconds": "When the latest window's metrics were published",
}

Sample = tuple[str, dict[str, str], float]


def drift_metrics(report: "DriftReport") -> dict[str, float]:
    m = {"drift.detected": float(report.drifted), "drift.share": report.share_drifted}
    for f in report.features:
        if f.ok and f.statistic is not None:
            m[f"drift.feature.{f.name}"] = float(f.statistic)
            m[f"drift.feature.{f.name}.drifted"] = float(f.drifted)
    if report.outputs is not None:
        for f in report.outputs.features:
            if f.ok and f.statistic is not None:
                m[f"drift.output.{f.name}"] = float(f.statistic)
        m["drift.output.detected"] = float(report.outputs.drifted)
    return m


def quality_metrics(report: "QualityReport") -> dict[str, float]:
    return {f"quality.{k}": v for k, v in report.metrics().items()}


def performance_metrics(row: dict[str, Any]) -> dict[str, float]:
    return {f"performance.{k}": float(v) for k, v in row.items() if isinstance(v, (int, float)) and k != "count"}


def gauge_samples(model: str, metrics: dict[str, float], window: str = "latest") -> list[Sample]:
    """Prometheus samples ``(name, labels, value)`` for flat monitoring metrics of one model."""
    base = {"model": model, "window": window}
    out: list[Sample] = []
    for key, value in metrics.items():
        parts = key.split(".")
        if key == "drift.detected":
            out.append(("loopml_drift_detected", dict(base), value))
        elif key == "drift.share":
            out.append(("loopml_drift_share", dict(base), value))
        elif parts[:2] == ["drift", "feature"]:
            if key.endswith(".drifted"):
                out.append(("loopml_drift_feature_drifted", {**base, "feature": ".".join(parts[2:-1])}, value))
            else:
                out.append(("loopml_drift_score", {**base, "feature": ".".join(parts[2:])}, value))
        elif parts[:2] == ["drift", "output"] and key != "drift.output.detected":
            out.append(("loopml_drift_score", {**base, "feature": ".".join(parts[2:])}, value))
        elif key == "quality.volume_ratio":
            out.append(("loopml_quality_volume_ratio", dict(base), value))
        elif parts[0] == "quality" and len(parts) >= 3:
            out.append(("loopml_quality", {**base, "measure": parts[1], "column": ".".join(parts[2:])}, value))
        elif parts[0] == "performance" and len(parts) == 2:
            out.append(("loopml_live_metric", {**base, "metric": parts[1]}, value))
    return out


def drift_gauge_samples(model: str, report: "DriftReport", window: str = "latest") -> list[Sample]:
    """The Prometheus samples of one drift report (what a server exposes on ``/metrics``)."""
    return gauge_samples(model, drift_metrics(report), window)


class MonitorCollector:
    """A prometheus-client collector serving the latest monitoring samples per model.

    ``registry.register(collector)``; then ``collector.update(model, samples)`` after each check.
    """

    def __init__(self) -> None:
        self._samples: dict[str, list[Sample]] = {}
        self._lock = threading.Lock()

    def update(self, model: str, samples: Iterable[Sample]) -> None:
        with self._lock:
            self._samples[model] = list(samples)

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        with self._lock:
            samples = [s for v in self._samples.values() for s in v]
        families: dict[tuple[str, tuple[str, ...]], Any] = {}
        for name, labels, value in samples:
            keys = tuple(sorted(labels))
            fam = families.get((name, keys))
            if fam is None:
                fam = families[(name, keys)] = GaugeMetricFamily(name, GAUGES.get(name, name), labels=list(keys))
            fam.add_metric([labels[k] for k in keys], value)
        yield from families.values()


# -- publishing to running servers -------------------------------------------------------------
# A monitoring check (CLI, controller) and the servers are separate processes; the workspace
# file ``<home>/monitor/latest-<model>.json`` carries the latest window's metrics between them.
# Servers re-read it at scrape time, only when its mtime changed (see MonitorFiles).

def latest_metrics_path(home: Any, model: str):
    from pathlib import Path

    return Path(home) / "monitor" / f"latest-{model}.json"


def publish_window_metrics(workspace: Any, model: str, version: str, metrics: dict[str, float]):
    """Write the flat metrics of ``model``'s latest window (as from
    :func:`loopml.monitor.service.window_metrics`) where every server serving it exposes
    them on ``/metrics`` as the :data:`GAUGES`. Atomic (temp file, fsync, rename); returns
    the file. ``workspace`` is a :class:`~loopml.config.Workspace` or its home folder."""
    import math
    import os
    import time

    home = workspace if isinstance(workspace, (str, os.PathLike)) else workspace.home
    path = latest_metrics_path(home, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {str(k): float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    doc = {"model": model, "version": str(version), "ts": time.time(), "metrics": clean}
    from loopml.fileio import atomic_write_json

    return atomic_write_json(path, doc)


class MonitorFiles:
    """Feeds a :class:`MonitorCollector` from the published files of the served models,
    reading a file only when its ``(mtime, inode)`` changed. Call :meth:`refresh` at scrape time."""

    def __init__(self, home: Any, collector: MonitorCollector) -> None:
        self.home = home
        self.collector = collector
        self._seen: dict[str, tuple[int, int] | None] = {}

    def refresh(self, models: Iterable[str]) -> None:
        import json

        for model in models:
            path = latest_metrics_path(self.home, model)
            try:
                st = path.stat()
                sig: tuple[int, int] | None = (st.st_mtime_ns, st.st_ino)
            except OSError:
                sig = None
            if self._seen.get(model, ()) == sig:
                continue
            self._seen[model] = sig
            if sig is None:
                self.collector.update(model, [])
                continue
            try:
                doc = json.loads(path.read_text())
                metrics = {k: float(v) for k, v in doc["metrics"].items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue  # a broken file keeps the last good samples; the next write replaces it
            stamp = ("loopml_monitor_published_timestamp_seconds",
                     {"model": model, "version": str(doc.get("version", ""))}, float(doc.get("ts", 0.0)))
            self.collector.update(model, [*gauge_samples(model, metrics), stamp])
