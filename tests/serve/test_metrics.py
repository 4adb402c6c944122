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
