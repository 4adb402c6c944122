"""Admission control: a bound on the requests each model handles at once, checked first.

A request is admitted (or refused with :class:`~loopml.errors.Overloaded`, 503 +
``Retry-After``) before its body is read or decoded, so a refusal costs next to nothing and
an overloaded server spends its time on the requests it accepted. The batcher's row bound
(``max_queue_rows``) still caps rows per queue; this caps *requests*, which the row bound
never reached for single-row traffic.

Counts of refused and dropped requests (by reason) are kept here for ``/metrics``.
"""

from __future__ import annotations

from collections import Counter

from loopml.errors import Overloaded

INFLIGHT = "inflight"  # refused: the model already had max_inflight requests
CLIENT_GONE = "client_gone"  # dropped unpredicted: the client disconnected while it waited
DEADLINE = "deadline"  # answered 504: its deadline passed before it was predicted


class Admission:
    """Per-model in-flight requests, bounded by ``max_inflight`` (0: no bound)."""

    def __init__(self, max_inflight: int, retry_after_s: int = 1) -> None:
        self.max_inflight = max_inflight
        self.retry_after_s = retry_after_s
        self.inflight: Counter[str] = Counter()
        self.dropped: Counter[tuple[str, str]] = Counter()  # (model, reason) -> requests

    def enter(self, model: str) -> None:
        """Admit one request for ``model`` or raise Overloaded; admitted ones must :meth:`leave`."""
        n = self.inflight[model]
        if self.max_inflight and n >= self.max_inflight:
            self.dropped[(model, INFLIGHT)] += 1
            raise Overloaded(model, self.retry_after_s)
        self.inflight[model] = n + 1

    def leave(self, model: str) -> None:
        self.inflight[model] -= 1

    def count(self, model: str, reason: str) -> None:
        self.dropped[(model, reason)] += 1
