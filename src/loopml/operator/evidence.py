"""Evidence for the operator's rollout steps, from Prometheus-format counters.

The operator does not talk to server pods one by one: it reads the servers' counters where
Prometheus already gathered them, from ``/federate`` (Prometheus text format, the same the
servers' ``/metrics`` speak, so ``loopml.loop.signals.scrape`` reads either). Champion and
challenger are told apart by the ``variant`` label; versions are summed, so the operator
needs no registry look-up to compare them.

Counters are deltas against a baseline taken when a step starts (:meth:`start`). Baselines
live in memory: after an operator restart the step's evidence starts again from zero, which
only delays the decision. The prediction log (divergence, shadow agreement) is not read here,
so those checks are not measured (``decide_step`` skips what is not measurable). Servers count
shadow predictions only in that log: in a shadow step every answered request was also sent to
the challenger, so its sample is the champion's answers minus ``loopml_shadow_errors`` (the
shadow predictions that failed or were dropped).
"""

from __future__ import annotations

import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass

from loopml.loop import signals
from loopml.spec import RolloutStep

FEDERATE_MATCH = '{__name__=~"loopml_requests.*|loopml_request_duration_seconds.*|loopml_shadow_errors.*"}'


@dataclass(frozen=True)
class EvidenceQuery:
    namespace: str
    name: str
    model: str
    step_index: int
    step: RolloutStep


def by_variant(counters: dict[str, float]) -> dict[str, float]:
    """The same counters with the version field emptied (summed over versions)."""
    out: dict[str, float] = {}
    for key, value in counters.items():
        name, _version, variant, status, le = key.split("|")
        k = "|".join([name, "", variant, status, le])
        out[k] = out.get(k, 0.0) + value
    return out


def evidence_from(counters: dict[str, float], step: RolloutStep) -> tuple[signals.Evidence, float]:
    ev = signals.Evidence(champion=signals.variant_stats(counters, "", ("champion", "primary")),
                          challenger=signals.variant_stats(counters, "", ("challenger",)))
    errors = signals.shadow_errors(counters, "")
    if step.kind == "canary":
        ev.challenger_logged = int(ev.challenger.requests)
    else:  # a shadow policy sends every answered request to the challenger too (serve/traffic.py)
        ev.challenger_logged = max(0, int(ev.champion.requests - errors))
    return ev, errors


class PrometheusEvidence:
    """``PrometheusEvidence(url)``: ``url`` is Prometheus' ``/federate`` (the match is added)
    or any page in Prometheus text format. The constructor does no I/O."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._baselines: dict[tuple[str, str, int], dict[str, float]] = {}
        self._lock = threading.Lock()

    def _counters(self, model: str) -> dict[str, float]:
        url = self.url
        if url.rstrip("/").endswith("/federate"):
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"match[]": FEDERATE_MATCH})
        with urllib.request.urlopen(url, timeout=self.timeout_s) as r:  # noqa: S310 (operator setting)
            text = r.read().decode("utf-8")
        return by_variant(signals.scrape(text, model))

    def start(self, q: EvidenceQuery) -> None:
        """Take the baseline of a step that starts now."""
        counters = self._counters(q.model)
        with self._lock:
            self._baselines[(q.namespace, q.name, q.step_index)] = counters

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            for key in [k for k in self._baselines if k[:2] == (namespace, name)]:
                del self._baselines[key]

    def __call__(self, q: EvidenceQuery) -> tuple[signals.Evidence, float]:
        counters = self._counters(q.model)
        with self._lock:
            base = self._baselines.setdefault((q.namespace, q.name, q.step_index), counters)
        return evidence_from(signals.delta(counters, base), q.step)
