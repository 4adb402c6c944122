"""Rollout evidence from Prometheus text (operator/evidence.py), served by a real HTTP page."""

from __future__ import annotations

from loopml.loop.rollout import ADVANCE, HOLD, ROLLBACK, decide_step
from loopml.operator.evidence import EvidenceQuery, PrometheusEvidence
from loopml.spec import RolloutSpec, RolloutStep

SHADOW = RolloutStep(kind="shadow", min_requests=50)
CANARY = RolloutStep(kind="canary", weight=0.1)
SPEC = RolloutSpec(steps=[SHADOW, CANARY], min_requests=20, max_error_rate_increase=0.05)


def test_counters_are_deltas_since_the_step_began_summed_over_versions(metrics_page):
    page, ev = metrics_page, PrometheusEvidence(metrics_page.url)
    page.series.update({("ev-a", "1", "champion", 200): 1000, ("ev-a", "2", "challenger", 200): 5})
    q = EvidenceQuery("ml", "a", "ev-a", 1, CANARY)
    ev.start(q)
    page.series.update({("ev-a", "1", "champion", 200): 1100, ("ev-a", "2", "challenger", 200): 20,
                        ("ev-a", "3", "challenger", 200): 11, ("ev-a", "2", "challenger", 422): 1,
                        ("other", "2", "challenger", 422): 99})
    got, _ = ev(q)
    assert (got.champion.requests, got.challenger.requests, got.challenger.errors) == (100, 27, 1)
    assert got.challenger_logged == 27
    assert decide_step(CANARY, SPEC, got).action == ADVANCE  # 1/27 = 3.7% errors: within 5%
    page.series[("ev-a", "2", "challenger", 422)] = 4  # 4/30 = 13.3%
    got, _ = ev(q)
    assert decide_step(CANARY, SPEC, got).action == ROLLBACK


def test_a_shadow_step_counts_the_shadowed_answers(metrics_page):
    page, ev = metrics_page, PrometheusEvidence(metrics_page.url)
    q = EvidenceQuery("ml", "b", "ev-b", 0, SHADOW)
    page.series[("ev-b", "1", "champion", 200)] = 10
    ev.start(q)
    page.series[("ev-b", "1", "champion", 200)] = 40
    got, errors = ev(q)
    assert (got.challenger_logged, errors) == (30, 0)
    assert decide_step(SHADOW, SPEC, got, errors).action == HOLD  # 30 of 50
    page.series[("ev-b", "1", "champion", 200)] = 80
    got, errors = ev(q)
    assert decide_step(SHADOW, SPEC, got, errors).action == ADVANCE
