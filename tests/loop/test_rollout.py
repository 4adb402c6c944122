from loopml.loop.rollout import ADVANCE, HOLD, ROLLBACK, decide_step, policy_for
from loopml.loop.signals import Evidence, VariantStats
from loopml.spec import RolloutSpec, RolloutStep

SPEC = RolloutSpec(min_requests=100, max_error_rate_increase=0.01, max_p99_ratio=2.0, p99_slack_ms=5.0)
CANARY = RolloutStep(kind="canary", weight=0.05)
SHADOW = RolloutStep(kind="shadow", min_requests=50)


def ev(ch_req=1000, ch_err=0, ch_p99=2.0, c_req=100, c_err=0, c_p99=2.0, logged=0, ch_p50=1.0, c_p50=1.0, **kw):
    return Evidence(champion=VariantStats(ch_req, ch_err, ch_p99, ch_p50),
                    challenger=VariantStats(c_req, c_err, c_p99, c_p50), challenger_logged=logged, **kw)


def test_holds_until_sample():
    d = decide_step(CANARY, SPEC, ev(c_req=40))
    assert d.action == HOLD and "40/100" in d.reasons[0]


def test_advances_when_healthy():
    d = decide_step(CANARY, SPEC, ev())
    assert d.action == ADVANCE
    assert d.evidence["challenger"]["requests"] == 100


def test_errors_roll_back_before_full_sample():
    d = decide_step(CANARY, SPEC, ev(c_req=20, c_err=5))
    assert d.action == ROLLBACK and "error rate 25.00%" in d.reasons[0]


def test_slow_challenger_rolls_back_once_confirmed():
    first = decide_step(CANARY, SPEC, ev(c_p99=50.0, c_p50=40.0))
    assert first.action == HOLD and any("holding until 300" in r for r in first.reasons)
    d = decide_step(CANARY, SPEC, ev(c_req=300, c_p99=50.0, c_p50=40.0))
    assert d.action == ROLLBACK
    assert any("TOO SLOW" in r for r in d.reasons)
    assert decide_step(CANARY, SPEC, ev(c_p99=8.9)).action == ADVANCE  # 2 x 2 + 5 = 9 ms allowed
    assert decide_step(CANARY, SPEC, ev(c_req=300, c_p99=8.0)).action == ADVANCE  # recovered


def test_tail_only_latency_breach_needs_ten_times_the_sample():
    noisy = ev(c_req=300, c_p99=50.0, c_p50=1.0)  # median in line: a busy machine, not a slow model
    assert decide_step(CANARY, SPEC, noisy).action == HOLD
    assert decide_step(CANARY, SPEC, ev(c_req=1000, c_p99=50.0, c_p50=1.0)).action == ROLLBACK


def test_shadow_uses_logged_predictions_and_shadow_errors():
    assert decide_step(SHADOW, SPEC, ev(c_req=0, logged=10)).action == HOLD
    assert decide_step(SHADOW, SPEC, ev(c_req=0, logged=60)).action == ADVANCE
    d = decide_step(SHADOW, SPEC, ev(c_req=0, logged=5), shadow_errors=30)
    assert d.action == ROLLBACK


def test_optional_guards():
    spec = SPEC.model_copy(update={"max_prediction_divergence": 0.2, "min_shadow_agreement": 0.9})
    assert decide_step(CANARY, spec, ev(divergence=0.5)).action == ROLLBACK
    assert decide_step(SHADOW, spec, ev(logged=60, shadow_agreement=0.5)).action == ROLLBACK
    d = decide_step(CANARY, SPEC, ev(divergence=0.5))
    assert d.action == ADVANCE and any("not gated" in r for r in d.reasons)


def test_policy_for_steps():
    assert policy_for(SHADOW, "2") == {"kind": "shadow", "challenger": "2"}
    assert policy_for(CANARY, "2") == {"kind": "canary", "weight": 0.05, "challenger": "2"}
