"""Live evidence for a rollout step: what champion and challenger did since the step began.

Errors are answers with status >= 400 labelled with a version and variant: the request
reached that model and failed there (a model that raises answers 422). Champion and
challenger see the same traffic, so comparing their rates cancels out bad client input.

Two sources, both real: the server's ``/metrics`` (Prometheus text: request counts by
version, variant and status, and latency histograms) and the prediction log (predictions
by version and variant, for distribution divergence and shadow agreement). Counters are
read as deltas against a baseline taken when the step began; a server restart (counters
reset) is detected and the current values are used as the delta.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

REQUESTS = "loopml_requests"
LATENCY = "loopml_request_duration_seconds"
SHADOW_ERRORS = "loopml_shadow_errors"


@dataclass
class VariantStats:
    requests: float = 0.0
    errors: float = 0.0
    p99_ms: float | None = None
    p50_ms: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass
class Evidence:
    champion: VariantStats = field(default_factory=VariantStats)
    challenger: VariantStats = field(default_factory=VariantStats)
    challenger_logged: int = 0
    divergence: float | None = None
    shadow_agreement: float | None = None
    online_metric_drop: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["champion"]["error_rate"] = self.champion.error_rate
        d["challenger"]["error_rate"] = self.challenger.error_rate
        return d


def scrape(text: str, model: str) -> dict[str, Any]:
    """Counters of one model from Prometheus text: {series_key: value} for requests and latency buckets."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name not in (REQUESTS, LATENCY, SHADOW_ERRORS):
            continue
        for s in fam.samples:
            if s.labels.get("model") != model:
                continue
            if s.name.endswith("_created"):
                continue
            key = "|".join([s.name, s.labels.get("version", ""), s.labels.get("variant", ""),
                            s.labels.get("status", ""), s.labels.get("le", "")])
            out[key] = out.get(key, 0.0) + float(s.value)
    return out


def delta(current: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    if any(current.get(k, 0.0) < v for k, v in baseline.items()):  # counters reset: server restarted
        return dict(current)
    return {k: v - baseline.get(k, 0.0) for k, v in current.items()}


def variant_stats(counters: dict[str, float], version: str, variants: tuple[str, ...]) -> VariantStats:
    stats = VariantStats()
    buckets: dict[float, float] = {}
    for key, value in counters.items():
        name, ver, variant, status, le = key.split("|")
        if ver != version or variant not in variants:
            continue
        if name.startswith(REQUESTS) and name.endswith("_total"):
            stats.requests += value
            if status and int(status) >= 400:  # a request that reached this version and failed there
                stats.errors += value
        elif name == LATENCY + "_bucket":
            bound = math.inf if le in ("+Inf", "inf") else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + value
    stats.p99_ms = histogram_quantile(0.99, buckets)
    stats.p50_ms = histogram_quantile(0.5, buckets)
    return stats


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus-style quantile from cumulative buckets (linear inside the bucket), in ms."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        c = buckets[b]
        if c >= rank:
            if math.isinf(b):
                return prev_bound * 1000.0
            width = c - prev_count
            frac = (rank - prev_count) / width if width > 0 else 1.0
            return (prev_bound + (b - prev_bound) * frac) * 1000.0
        prev_bound, prev_count = b, c
    return prev_bound * 1000.0


def shadow_errors(counters: dict[str, float], version: str) -> float:
    """Failed shadow predictions (the server labels them by model, and by version when it can)."""
    return sum(v for k, v in counters.items()
               if k.startswith(SHADOW_ERRORS) and k.split("|")[1] in ("", version))


def js_divergence(a: np.ndarray, b: np.ndarray, bins: int = 10) -> float | None:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two samples of scores."""
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size < 10 or b.size < 10:
        return None
    edges = np.quantile(np.concatenate([a, b]), np.linspace(0, 1, bins + 1))
    edges = np.unique(edges)
    if edges.size < 2:
        return 0.0
    pa = np.histogram(a, edges)[0] + 0.5
    pb = np.histogram(b, edges)[0] + 0.5
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(pa / pa.sum(), pb / pb.sum(), base=2))


def log_evidence(log, champion: str, challenger: str, since_ts: float) -> tuple[int, float | None, float | None]:
    """From the prediction log since ``since_ts``: (challenger rows, divergence, shadow agreement)."""
    import pandas as pd

    if log is None or len(log) == 0:
        return 0, None, None
    ts = pd.to_datetime(log["ts"], utc=True)
    recent = log[ts >= pd.Timestamp(since_ts, unit="s", tz="UTC")]
    score = "out.proba" if "out.proba" in recent.columns and recent["out.proba"].notna().any() else "out.prediction"
    champ = recent[recent["version"].astype(str) == champion]
    chall = recent[recent["version"].astype(str) == challenger]
    divergence = None
    if score in recent.columns:
        divergence = js_divergence(pd.to_numeric(champ[score], errors="coerce").to_numpy(float),
                                   pd.to_numeric(chall[score], errors="coerce").to_numpy(float))
    agreement = None
    shadow = chall[chall["variant"].astype(str) == "shadow"]
    if len(shadow) and "out.prediction" in recent.columns:
        joined = shadow[["request_id", "out.prediction"]].merge(
            champ[["request_id", "out.prediction"]], on="request_id", suffixes=("_c", "_p"))
        if len(joined):
            agreement = float((joined["out.prediction_c"].astype(str) == joined["out.prediction_p"].astype(str)).mean())
    return int(len(chall)), divergence, agreement
