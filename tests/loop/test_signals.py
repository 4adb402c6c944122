import numpy as np
import pandas as pd

from loopml.loop.signals import delta, histogram_quantile, js_divergence, log_evidence, scrape, variant_stats

TEXT = """# HELP loopml_requests_total Requests
# TYPE loopml_requests_total counter
loopml_requests_total{model="fraud",version="1",variant="champion",status="200"} 90.0
loopml_requests_total{model="fraud",version="2",variant="challenger",status="200"} 8.0
loopml_requests_total{model="fraud",version="2",variant="challenger",status="422"} 2.0
loopml_requests_total{model="other",version="2",variant="challenger",status="500"} 50.0
# HELP loopml_request_duration_seconds Latency
# TYPE loopml_request_duration_seconds histogram
loopml_request_duration_seconds_bucket{model="fraud",version="2",variant="challenger",status="200",le="0.001"} 0.0
loopml_request_duration_seconds_bucket{model="fraud",version="2",variant="challenger",status="200",le="0.01"} 10.0
loopml_request_duration_seconds_bucket{model="fraud",version="2",variant="challenger",status="200",le="+Inf"} 10.0
loopml_request_duration_seconds_count{model="fraud",version="2",variant="challenger",status="200"} 10.0
loopml_request_duration_seconds_sum{model="fraud",version="2",variant="challenger",status="200"} 0.05
"""


def test_scrape_and_variant_stats():
    c = scrape(TEXT, "fraud")
    ch = variant_stats(c, "2", ("challenger",))
    assert ch.requests == 10 and ch.errors == 2 and abs(ch.error_rate - 0.2) < 1e-12
    assert abs(ch.p99_ms - (1 + 9 * 0.99)) < 1e-9  # linear inside the (1 ms, 10 ms] bucket
    champ = variant_stats(c, "1", ("champion",))
    assert champ.requests == 90 and champ.errors == 0 and champ.p99_ms is None


def test_delta_and_counter_reset():
    base = {"a": 5.0, "b": 1.0}
    assert delta({"a": 8.0, "b": 1.0}, base) == {"a": 3.0, "b": 0.0}
    assert delta({"a": 2.0, "b": 0.0}, base) == {"a": 2.0, "b": 0.0}  # restarted server


def test_histogram_quantile_edges():
    assert histogram_quantile(0.99, {}) is None
    assert histogram_quantile(0.5, {0.1: 0.0, float("inf"): 4.0}) == 100.0


def test_js_divergence_and_log_evidence():
    rng = np.random.default_rng(0)
    same = js_divergence(rng.normal(size=2000), rng.normal(size=2000))
    far = js_divergence(rng.normal(size=2000), rng.normal(3, 1, size=2000))
    assert same < 0.1 < far <= 1.0
    now = pd.Timestamp.now(tz="UTC")
    log = pd.DataFrame({
        "request_id": ["a", "b", "a", "b", "c"],
        "ts": [now] * 5,
        "version": ["1", "1", "2", "2", "1"],
        "variant": ["champion", "champion", "shadow", "shadow", "champion"],
        "out.prediction": [0, 1, 0, 0, 1],
    })
    n, div, agree = log_evidence(log, "1", "2", now.timestamp() - 10)
    assert n == 2 and agree == 0.5 and div is None
