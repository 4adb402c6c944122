"""The promotion gate: challenger against champion on the same holdout."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from loopml.evaluate.names import higher_is_better
from loopml.spec import EvaluationSpec


@dataclass
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reasons": self.reasons}


def _better_by(metric: str, new: float, old: float) -> float:
    """How much better ``new`` is than ``old`` (positive = better), whatever the metric's direction."""
    return new - old if higher_is_better(metric) else old - new


def decide(candidate: dict[str, float], champion: dict[str, float] | None, spec: EvaluationSpec,
           candidate_slices: dict | None = None, champion_slices: dict | None = None) -> GateDecision:
    """Pass when the primary metric is better by ``margin`` and no guard is worse than its tolerance.

    Without a champion, the candidate passes when it meets every ``minimum`` threshold.
    Guards given as ``slice:<column>=<value>:<metric>`` compare one slice's metric.
    """
    primary = spec.primary_metric or "roc_auc"
    reasons: list[str] = []
    ok = True
    if primary not in candidate or math.isnan(candidate[primary]):
        return GateDecision(False, [f"primary metric '{primary}' was not computed for the candidate"])
    for metric, threshold in spec.minimum.items():
        value = candidate.get(metric)
        if value is None:
            ok = False
            reasons.append(f"minimum: '{metric}' not computed")
            continue
        meets = value >= threshold if higher_is_better(metric) else value <= threshold
        reasons.append(f"minimum {metric}: {value:.4f} {'meets' if meets else 'misses'} {threshold}")
        ok &= meets
    if champion is None:
        reasons.insert(0, "no champion yet: minimum thresholds decide")
        return GateDecision(ok, reasons)
    gain = _better_by(primary, candidate[primary], champion.get(primary, float("nan")))
    beats = (not math.isnan(gain)) and gain >= spec.margin and (gain > 0 or spec.margin < 0)
    reasons.append(f"{primary}: {candidate[primary]:.4f} vs champion {champion.get(primary, float('nan')):.4f} "
                   f"(change {gain:+.4f}, margin {spec.margin}) -> {'better' if beats else 'not better'}")
    ok &= beats
    for metric, tolerance in spec.guards.items():
        if metric.startswith("slice:"):
            ok &= _slice_guard(metric, tolerance, candidate_slices or {}, champion_slices or {}, reasons)
        else:
            ok &= _guard(f"guard {metric}", metric, tolerance, candidate.get(metric), champion.get(metric), reasons)
    return GateDecision(ok, reasons)


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _guard(label: str, metric: str, tolerance: float, new: float | None, old: float | None,
           reasons: list[str]) -> bool:
    """One guard: fails when it cannot be evaluated, since a configured guard is a promise."""
    absent = [who for who, v in (("candidate", new), ("champion", old)) if _missing(v)]
    if absent:
        reasons.append(f"{label}: '{metric}' not computed for the {' and the '.join(absent)} -> FAILS "
                       "(a configured guard that cannot be checked blocks promotion)")
        return False
    gain = _better_by(metric, new, old)
    fine = -gain <= tolerance
    change = f"better by {gain:.4f}" if gain > 0 else f"worse by {-gain:.4f}" if gain < 0 else "unchanged"
    reasons.append(f"{label}: {change} (tolerance {tolerance}) -> {'ok' if fine else 'FAILS'}")
    return fine


def _slice_guard(key: str, tolerance: float, cand: dict, champ: dict, reasons: list[str]) -> bool:
    """``slice:<column>=<value>:<metric>``; a slice absent from either evaluation fails the guard."""
    try:
        _, where, metric = key.split(":")
        column, value = where.split("=", 1)
    except ValueError:
        reasons.append(f"guard {key}: not of the form slice:<column>=<value>:<metric> -> FAILS")
        return False
    found = [who for who, s in (("candidate", cand), ("champion", champ)) if value in s.get(column, {})]
    if len(found) < 2:
        lost = [who for who in ("candidate", "champion") if who not in found]
        reasons.append(f"guard {key}: no slice {column}={value} in the {' and the '.join(lost)} evaluation "
                       "(value absent from the holdout, or under the minimum rows per slice) -> FAILS")
        return False
    return _guard(f"guard {key}", metric, tolerance, cand[column][value].get(metric),
                  champ[column][value].get(metric), reasons)
