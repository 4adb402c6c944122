"""The rollout decision: advance, hold or roll back one step, from its evidence. Pure.

Rules, in order (each threshold from the spec's ``rollout`` section):

1. errors: once the challenger has answered 10 requests (or, in shadow, 10 predictions were
   attempted), its error rate may exceed the champion's by at most ``max_error_rate_increase``;
   otherwise roll back at once, without waiting for the full sample.
2. sample: hold until the challenger has ``min_requests`` answers in this step (shadow: logged
   shadow predictions; canary: answered requests).
3. latency (canary): challenger p99 <= champion p99 x ``max_p99_ratio`` + ``p99_slack_ms``.
   A p99 over a few dozen requests is nearly their maximum, so a first breach holds the step
   to collect evidence; a breach that persists at ``LATENCY_CONFIRM`` x the sample rolls back
   when the challenger's median is slower by the same rule (a slow model is slow throughout);
   a tail-only breach (median in line: often a busy machine) must persist to
   ``TAIL_CONFIRM`` x the sample.
4. prediction divergence (Jensen-Shannon distance of the score distributions) <=
   ``max_prediction_divergence``; shadow agreement >= ``min_shadow_agreement``; online metric
   drop <= ``max_online_metric_drop`` — each only when configured and measurable.
5. otherwise advance; after the last step the challenger is promoted to 100%.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loopml.loop.signals import Evidence
from loopml.spec import RolloutSpec, RolloutStep

ADVANCE, HOLD, ROLLBACK = "advance", "hold", "rollback"
MIN_FOR_ERRORS = 10
LATENCY_CONFIRM = 3
TAIL_CONFIRM = 10


@dataclass
class StepDecision:
    action: str
    reasons: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reasons": self.reasons, "evidence": self.evidence}


def step_label(step: RolloutStep) -> str:
    return "shadow" if step.kind == "shadow" else f"canary {step.weight:.0%}"


def policy_for(step: RolloutStep, challenger_version: str) -> dict[str, Any]:
    """The server traffic policy of a step (see loopml.serve.traffic)."""
    if step.kind == "shadow":
        return {"kind": "shadow", "challenger": challenger_version}
    return {"kind": "canary", "weight": step.weight, "challenger": challenger_version}


def decide_step(step: RolloutStep, spec: RolloutSpec, ev: Evidence, shadow_errors: float = 0.0) -> StepDecision:
    need = step.min_requests or spec.min_requests
    d = StepDecision(HOLD, evidence={**ev.to_dict(), "shadow_errors": shadow_errors, "min_requests": need,
                                     "step": step_label(step)})
    champ_rate = ev.champion.error_rate
    if step.kind == "shadow":
        attempted = ev.challenger_logged + shadow_errors
        sample = ev.challenger_logged
        chall_rate = shadow_errors / attempted if attempted else 0.0
    else:
        attempted = ev.challenger.requests
        sample = int(ev.challenger.requests)
        chall_rate = ev.challenger.error_rate
    if attempted >= MIN_FOR_ERRORS and chall_rate - champ_rate > spec.max_error_rate_increase:
        d.action = ROLLBACK
        d.reasons.append(f"error rate {chall_rate:.2%} vs champion {champ_rate:.2%}: exceeds the allowed increase "
                         f"of {spec.max_error_rate_increase:.2%} (over {attempted:.0f} challenger requests)")
        return d
    if sample < need:
        d.reasons.append(f"waiting for evidence: {sample}/{need} challenger answers in {step_label(step)}")
        return d
    d.reasons.append(f"error rate {chall_rate:.2%} vs champion {champ_rate:.2%} "
                     f"(allowed increase {spec.max_error_rate_increase:.2%}): ok")
    fail = False
    if step.kind == "canary" and ev.challenger.p99_ms is not None and ev.champion.p99_ms is not None:
        limit = ev.champion.p99_ms * spec.max_p99_ratio + spec.p99_slack_ms
        ok = ev.challenger.p99_ms <= limit
        median_slow = (ev.challenger.p50_ms is not None and ev.champion.p50_ms is not None
                       and ev.challenger.p50_ms > ev.champion.p50_ms * spec.max_p99_ratio + spec.p99_slack_ms)
        confirm_at = (LATENCY_CONFIRM if median_slow else TAIL_CONFIRM) * need
        confirmed = sample >= confirm_at
        verdict = "ok" if ok else ("TOO SLOW" if confirmed else f"over the limit: holding until {confirm_at} "
                                   f"requests confirm it ({'median slower too' if median_slow else 'tail only'})")
        d.reasons.append(f"p99 {ev.challenger.p99_ms:.1f} ms vs limit {limit:.1f} ms "
                         f"(champion {ev.champion.p99_ms:.1f} ms x {spec.max_p99_ratio} + {spec.p99_slack_ms} ms): "
                         + verdict)
        if not ok and not confirmed:
            return d  # HOLD
        fail |= not ok
    checks = (("prediction divergence", ev.divergence, spec.max_prediction_divergence, "max"),
              ("shadow agreement", ev.shadow_agreement, spec.min_shadow_agreement, "min"),
              ("online metric drop", ev.online_metric_drop, spec.max_online_metric_drop, "max"))
    for name, value, threshold, kind in checks:
        if value is None:
            continue
        if threshold is None:
            d.reasons.append(f"{name} {value:.3f} (not gated)")
            continue
        ok = value <= threshold if kind == "max" else value >= threshold
        d.reasons.append(f"{name} {value:.3f} vs {kind} {threshold}: " + ("ok" if ok else "FAILS"))
        fail |= not ok
    d.action = ROLLBACK if fail else ADVANCE
    return d
