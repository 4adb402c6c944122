"""Export alert rules as a Prometheus alerting-rules file (for teams on Alertmanager).

Each rule's metric maps to the gauge a loopml server exposes (see
:mod:`loopml.monitor.metrics`); ``for_windows`` windows become a ``for:`` duration of
``for_windows x evaluation_interval``. Cooldown and webhooks are Alertmanager's job there
(``repeat_interval``, receivers), so they are carried as annotations only.
"""

from __future__ import annotations

from loopml.monitor.alerts import AlertRule
from loopml.monitor.windows import parse_duration


def metric_selector(metric: str, model: str | None) -> str:
    """PromQL for one loopml metric name, e.g. ``drift.feature.amount`` ->
    ``loopml_drift_score{feature="amount"}``."""
    labels: dict[str, str] = {}
    parts = metric.split(".")
    if metric == "drift.detected":
        name = "loopml_drift_detected"
    elif metric == "drift.share":
        name = "loopml_drift_share"
    elif parts[:2] == ["drift", "feature"] and metric.endswith(".drifted"):
        name, labels["feature"] = "loopml_drift_feature_drifted", ".".join(parts[2:-1])
    elif parts[:2] in (["drift", "feature"], ["drift", "output"]):
        name, labels["feature"] = "loopml_drift_score", ".".join(parts[2:])
    elif metric == "quality.volume_ratio":
        name = "loopml_quality_volume_ratio"
    elif parts[0] == "quality" and len(parts) >= 3:
        name, labels["measure"], labels["column"] = "loopml_quality", parts[1], ".".join(parts[2:])
    elif parts[0] == "performance" and len(parts) == 2:
        name, labels["metric"] = "loopml_live_metric", parts[1]
    else:
        from loopml.errors import MonitorError

        raise MonitorError(f"alert metric '{metric}' has no Prometheus gauge; see loopml.monitor.metrics")
    if model:
        labels["model"] = model
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}" if inner else name


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def prometheus_rules(rules: list[AlertRule], *, evaluation_interval: str = "5m", group: str = "loopml") -> dict:
    """The rules as a Prometheus rule-file document (dump it with ``yaml.safe_dump``)."""
    step = parse_duration(evaluation_interval)
    out = []
    for r in rules:
        entry = {
            "alert": r.name,
            "expr": f"{metric_selector(r.metric, r.model)} {r.op} {r.threshold:g}",
            "labels": {"severity": r.severity, "source": "loopml"},
            "annotations": {"summary": r.describe(), "loopml_cooldown": r.cooldown},
        }
        if r.for_windows > 1:
            entry["for"] = _duration((r.for_windows - 1) * step)
        if r.webhooks:
            entry["annotations"]["loopml_webhooks"] = ",".join(r.webhooks)
        out.append(entry)
    return {"groups": [{"name": group, "interval": evaluation_interval, "rules": out}]}


def prometheus_rules_yaml(rules: list[AlertRule], **kwargs) -> str:
    import yaml

    return yaml.safe_dump(prometheus_rules(rules, **kwargs), sort_keys=False)
