"""Monitoring against a workspace: resolve the model, read a log window, compute.

The statistics (:mod:`loopml.monitor.drift`) take plain values; this module is the glue
the CLI, the alert evaluator and the report share: it looks up the champion's training
reference profile through the registry and reads the window with DuckDB.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopml.errors import MonitorError

if TYPE_CHECKING:
    import pandas as pd

    from loopml.config import Workspace
    from loopml.data.profile import ReferenceProfile
    from loopml.monitor.result import DriftReport
    from loopml.spec import ProjectSpec


def try_load_spec(project: str | Path | None) -> "ProjectSpec | None":
    """The project's spec when ``loopml.yaml`` exists there, else None (monitoring works without)."""
    from loopml.spec import SPEC_FILE, load_spec

    if project is None:
        return None
    p = Path(project)
    if (p / SPEC_FILE).exists() or (p.is_file() and p.name.endswith((".yaml", ".yml"))):
        return load_spec(p)
    return None


def champion_reference(ws: "Workspace", model: str) -> tuple[Any, "ReferenceProfile"]:
    """``(ModelVersionRef, ReferenceProfile)`` for ``NAME[@ALIAS|/VERSION]`` (default champion)."""
    from loopml.registry.client import Registry, parse_model_ref

    name, ref = parse_model_ref(model)
    registry = Registry(ws)
    version = registry.resolve(name, ref)
    return version, registry.reference_profile(version)


def read_log_window(ws: "Workspace", name: str, *, last: int | None = None, since: float | None = None,
                    until: float | None = None) -> "pd.DataFrame":
    from loopml.monitor.windows import _iso, log_extent, read_window

    if last is not None and last < 1:
        raise MonitorError(f"the window must be at least 1 row; got {last}")
    if since is not None and until is not None and until <= since:
        raise MonitorError(f"the window ends ({_iso(until)}) before it starts ({_iso(since)})")
    df = read_window(ws.predictions, name, last=last, since=since, until=until)
    if len(df) == 0:
        lo, hi, total = log_extent(ws.predictions, name)
        if total:  # the log has rows, just not in the asked time range
            span = f"{_iso(since) if since is not None else 'the start'} .. {_iso(until) if until is not None else 'now'}"
            raise MonitorError(f"no predictions of '{name}' in {span}; its log holds {total:,} rows from "
                               f"{_iso(lo)} to {_iso(hi)}")
        where = ws.predictions / name
        raise MonitorError(f"no predictions logged for model '{name}' (log: {where}); "
                           "serve it with 'loopml serve' and send traffic first")
    return df


def drift_check(reference: "ReferenceProfile", window: "pd.DataFrame", spec: "ProjectSpec | None" = None, *,
                version: Any = None, segment: str | None = None) -> "DriftReport":
    """Input drift (plus prediction drift as ``report.outputs``) of one log window."""
    from loopml.monitor.classes import class_columns
    from loopml.monitor.drift import compute_drift
    from loopml.monitor.segments import compute_prediction_drift

    settings = spec.monitoring if spec is not None else None
    features = None
    target = None
    classification = None  # without a spec: a classifier is a model that logs out.proba
    if spec is not None:
        target = spec.data.target
        features = [c for c in spec.feature_columns(list(reference.columns)) if c in reference.columns]
        classification = spec.task == "classification"
    report = compute_drift(reference, window, settings=settings, features=features,
                           classes=class_columns(spec, reference))
    report.outputs = compute_prediction_drift(reference, window, target=target, settings=settings,
                                              classification=classification)
    if version is not None:
        report.model, report.version = version.name, version.version
    if "ts" in window.columns and len(window):
        ts = window["ts"]
        report.window.update({"rows": int(len(window)), "start": str(ts.min()), "end": str(ts.max())})
    if "version" in window.columns and len(window):
        served = window["version"].astype("string").fillna("?").value_counts()
        report.window["served_by"] = {str(k): int(v) for k, v in served.items()}
    if segment:
        report.window["segments"] = {k: r.to_dict() for k, r in segment_drift(reference, window, spec, segment).items()}
    return report


def segment_drift(reference: "ReferenceProfile", window: "pd.DataFrame", spec: "ProjectSpec | None",
                  segment: str) -> dict[str, "DriftReport"]:
    """One drift report per value of column ``segment`` (the spec's settings and features)."""
    from loopml.monitor.classes import class_columns
    from loopml.monitor.segments import compute_segment_drift

    settings = spec.monitoring if spec is not None else None
    features = None
    if spec is not None:
        features = [c for c in spec.feature_columns(list(reference.columns)) if c in reference.columns]
    return compute_segment_drift(reference, window, segment, settings=settings, features=features,
                                 classes=class_columns(spec, reference))


def check_model_drift(ws: "Workspace", model: str, *, spec: "ProjectSpec | None" = None,
                      last: int | None = None, since: float | None = None, until: float | None = None,
                      segment: str | None = None) -> "DriftReport":
    """Drift of a model's latest log window against its champion's training reference."""
    version, reference = champion_reference(ws, model)
    if last is None and since is None:
        last = spec.monitoring.window if spec is not None else 1000
    window = read_log_window(ws, version.name, last=last, since=since, until=until)
    return drift_check(reference, window, spec, version=version, segment=segment)


def window_quality(reference: "ReferenceProfile", window: "pd.DataFrame", *, features: list[str] | None = None,
                   log_root: str | Path | None = None, model: str | None = None,
                   span: tuple[float, float] | None = None, history: int | None = None):
    """Data quality of one window, with its volume against the log's history.

    With ``log_root`` (the workspace's ``predictions`` folder) the expected volume is the
    median row count of the equal-length windows before ``span`` (default: the window's
    first to last ``ts``) in ``model``'s log; with no earlier window the status is
    "insufficient history". Without ``log_root`` no expected volume is looked up.
    """
    from loopml.monitor.quality import VOLUME_HISTORY, check_quality, expected_volume, window_span

    expected, n_hist, seconds = None, None, None
    if log_root is not None:
        if model is None and "model" in window.columns and len(window):
            model = str(window["model"].iloc[-1])
        span = span or window_span(window)
        n_hist = 0
        if span is not None and model:
            seconds = span[1] - span[0]
            expected, n_hist = expected_volume(log_root, model, span[0], span[1],
                                               windows=history or VOLUME_HISTORY)
    return check_quality(reference, window, features=features, expected_rows=expected,
                         volume_history=n_hist, window_seconds=seconds)


def window_metrics(reference: "ReferenceProfile", window: "pd.DataFrame", spec: "ProjectSpec | None" = None,
                   *, version: Any = None, log_root: str | Path | None = None,
                   span: tuple[float, float] | None = None,
                   segment: str | None = None) -> tuple["DriftReport", Any, dict[str, float]]:
    """Drift, quality and their flat metrics (for alert rules and gauges) of one window.

    Pass ``log_root`` (``workspace.predictions``) to judge the window's volume against the
    log's history (``quality.volume_ratio``); see :func:`window_quality`.
    """
    from loopml.monitor.metrics import drift_metrics, quality_metrics

    report = drift_check(reference, window, spec, version=version, segment=segment)
    quality = window_quality(reference, window, features=[f.name for f in report.features], log_root=log_root,
                             model=version.name if version is not None else None, span=span)
    return report, quality, {**drift_metrics(report), **quality_metrics(quality)}


def check_model_window(ws: "Workspace", model: str, *, spec: "ProjectSpec | None" = None,
                       last: int | None = None, since: float | None = None, until: float | None = None,
                       segment: str | None = None, now: float | None = None):
    """:func:`window_metrics` of a model's latest log window (or ``since``/``until``).

    A time window's volume is judged over ``[since, until or now)``, so a quiet period
    counts as low volume even when its last row is old.
    """
    import time

    version, reference = champion_reference(ws, model)
    if last is None and since is None:
        last = spec.monitoring.window if spec is not None else 1000
    window = read_log_window(ws, version.name, last=last, since=since, until=until)
    span = None
    if since is not None:
        span = (since, until if until is not None else (time.time() if now is None else now))
    return window_metrics(reference, window, spec, version=version, log_root=ws.predictions, span=span,
                          segment=segment)


def load_rules(spec: "ProjectSpec | None", rules_file: str | Path | None = None) -> list:
    """Alert rules from a YAML file (a list, or a mapping with ``alerts:``) or the spec's
    ``monitoring.alerts``."""
    from loopml.monitor.alerts import parse_rules

    if rules_file is not None:
        import yaml

        p = Path(rules_file)
        try:
            raw = yaml.safe_load(p.read_text())
        except (OSError, yaml.YAMLError) as exc:
            from loopml.errors import SpecError

            raise SpecError(str(p), f"cannot read alert rules ({exc})") from None
        if isinstance(raw, dict):
            raw = raw.get("alerts", raw.get("monitoring", {}).get("alerts", []))
        return parse_rules(raw, str(p))
    raw = getattr(spec.monitoring, "alerts", []) if spec is not None else []
    return [r if not isinstance(r, dict) else parse_rules([r])[0] for r in raw]


def check_alerts(ws: "Workspace", model: str, rules: list, *, spec: "ProjectSpec | None" = None,
                 last: int | None = None, now: float | None = None):
    """Evaluate the rules on the model's latest window, persist, and deliver notifications.

    Returns ``(events queued now, delivered, failed)``.
    """
    from loopml.monitor.alert_delivery import deliver_pending
    from loopml.monitor.alert_store import AlertStore
    from loopml.monitor.alerts import evaluate

    version, reference = champion_reference(ws, model)
    if last is None:
        last = spec.monitoring.window if spec is not None else 1000
    window = read_log_window(ws, version.name, last=last)
    _, _, metrics = window_metrics(reference, window, spec, version=version, log_root=ws.predictions)
    window_end = float(window["ts"].max().timestamp())
    with AlertStore(ws.state_uri) as store:
        events = evaluate(rules, version.name, metrics, window_end=window_end, store=store, now=now)
        delivered, failed = deliver_pending(store, rules, log_path=ws.home / "alerts.jsonl")
    return events, delivered, failed
