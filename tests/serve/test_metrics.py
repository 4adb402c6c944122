"""/metrics is valid Prometheus text with the series the issue asks for."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def test_metrics_parse_and_count_requests(server):
    with httpx.Client(base_url=server.url) as c:
        for _ in range(3):
            assert c.post("/invocations", json={"instances": [[1, 2, 3, 4], [0, 0, 0, 0]]}).status_code == 200
        assert c.post("/invocations", json={"instances": [[1, 2]]}).status_code == 400
        text = c.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("loopml_requests", "loopml_request_duration_seconds", "loopml_batch_size_rows",
                 "loopml_queue_rows", "loopml_inflight_requests", "loopml_model_load_seconds",
                 "loopml_prediction_log_lag_seconds", "loopml_model_ready"):
        assert name in families, name
    ok = [s for s in families["loopml_requests"].samples
          if s.name == "loopml_requests_total" and s.labels["model"] == "clf" and s.labels["status"] == "200"]
    assert ok and ok[0].value == 3 and ok[0].labels["version"] == "1" and ok[0].labels["variant"] == "champion"
    bad = [s for s in families["loopml_requests"].samples
           if s.name == "loopml_requests_total" and s.labels["status"] == "400"]
    assert bad and bad[0].value == 1
    rows = [s for s in families["loopml_batch_size_rows"].samples
            if s.name == "loopml_batch_size_rows_sum" and s.labels["model"] == "clf"]
    assert rows[0].value == 6
    ready = {(s.labels["model"], s.labels["version"]) for s in families["loopml_model_ready"].samples}
    assert ("clf", "1") in ready and ("mixed", "1") in ready


def _samples(server) -> dict[tuple, float]:
    text = httpx.get(server.url + "/metrics").text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_published_monitoring_gauges_are_scraped(server, workspace):
    from loopml.monitor.metrics import latest_metrics_path, publish_window_metrics

    assert not any(k[0].startswith("loopml_drift") for k in _samples(server))
    metrics = {"drift.detected": 1.0, "drift.share": 0.5, "drift.feature.f0": 0.31, "drift.feature.f0.drifted": 1.0,
               "drift.feature.f1": 0.02, "drift.feature.f1.drifted": 0.0, "quality.missing_rate.f1": 0.1,
               "quality.volume_ratio": 0.9, "performance.roc_auc": 0.81, "drift.share_nan": float("nan")}
    path = publish_window_metrics(workspace, "clf", "1", metrics)
    assert path == latest_metrics_path(workspace.home, "clf") and path.exists()
    assert not list(path.parent.glob("*.tmp"))
    got = _samples(server)
    base = (("model", "clf"), ("window", "latest"))
    assert got[("loopml_drift_detected", base)] == 1.0
    assert got[("loopml_drift_share", base)] == 0.5
    assert got[("loopml_drift_score", tuple(sorted(base + (("feature", "f0"),))))] == 0.31
    assert got[("loopml_drift_score", tuple(sorted(base + (("feature", "f1"),))))] == 0.02
    assert got[("loopml_drift_feature_drifted", tuple(sorted(base + (("feature", "f0"),))))] == 1.0
    assert got[("loopml_quality", tuple(sorted(base + (("measure", "missing_rate"), ("column", "f1")))))] == 0.1
    assert got[("loopml_quality_volume_ratio", base)] == 0.9
    assert got[("loopml_live_metric", tuple(sorted(base + (("metric", "roc_auc"),))))] == 0.81
    stamp = got[("loopml_monitor_published_timestamp_seconds", (("model", "clf"), ("version", "1")))]
    assert stamp > 1.6e9
    # a new window replaces the old values; a model that is not served is not exposed
    publish_window_metrics(workspace.home, "clf", "1", {"drift.detected": 0.0, "drift.share": 0.0})
    publish_window_metrics(workspace, "ghost", "3", {"drift.detected": 1.0})
    got = _samples(server)
    assert got[("loopml_drift_detected", base)] == 0.0
    assert ("loopml_drift_score", tuple(sorted(base + (("feature", "f0"),)))) not in got
    assert not any(dict(k[1]).get("model") == "ghost" for k in got)
