"""Traffic policies: which variant of an endpoint answers a request, and whether to shadow.

An endpoint has a *primary* variant (the ref it was started with, usually
``champion``) and, when a policy needs one, a *challenger* (an alias or version,
``challenger`` by default). Policies are small, pure and picklable:

- ``single``: everything to the primary;
- ``canary``: a random ``weight`` fraction to the challenger;
- ``ab``: sticky by a request key (``header:NAME`` or ``input:COLUMN``): the same key
  always reaches the same variant, a ``weight`` fraction of keys the challenger;
- ``shadow``: the primary answers; every request is also sent to the challenger off
  the critical path and only logged.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass

from loopml.errors import InvalidTrafficPolicy

PRIMARY = "primary"
CHALLENGER = "challenger"
KINDS = ("single", "canary", "ab", "shadow")


@dataclass(frozen=True)
class TrafficPolicy:
    """A validated policy; build it with :func:`parse_policy`."""

    kind: str = "single"
    weight: float = 0.0
    key: str | None = None
    challenger: str = "challenger"

    @property
    def needs_challenger(self) -> bool:
        return self.kind != "single"

    @property
    def shadow(self) -> bool:
        return self.kind == "shadow"

    def choose(self, headers: dict[str, str], first_row: dict | None = None) -> str:
        """``PRIMARY`` or ``CHALLENGER`` for one request."""
        if self.kind == "canary":
            return CHALLENGER if random.random() < self.weight else PRIMARY
        if self.kind == "ab":
            value = self.sticky_value(headers, first_row)
            if value is None:
                return PRIMARY
            return CHALLENGER if bucket(value) < self.weight else PRIMARY
        return PRIMARY

    def sticky_value(self, headers: dict[str, str], first_row: dict | None) -> str | None:
        where, _, name = (self.key or "").partition(":")
        if where == "header":
            return headers.get(name.lower())
        if where == "input" and first_row is not None:
            value = first_row.get(name)
            return None if value is None else str(value)
        return None

    @property
    def key_column(self) -> str | None:
        where, _, name = (self.key or "").partition(":")
        return name if where == "input" else None

    def to_dict(self) -> dict:
        return asdict(self)


def bucket(value: str) -> float:
    """A stable number in [0, 1) for a key: same key, same bucket, in every process."""
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def parse_policy(data: dict) -> TrafficPolicy:
    """Validate a policy given as a dict (admin API body, CLI); raises InvalidTrafficPolicy."""
    if not isinstance(data, dict):
        raise InvalidTrafficPolicy("expected a JSON object such as {\"kind\": \"canary\", \"weight\": 0.1}")
    unknown = set(data) - {"kind", "weight", "key", "challenger"}
    if unknown:
        raise InvalidTrafficPolicy(f"unknown field(s) {sorted(unknown)}; allowed: kind, weight, key, challenger")
    kind = data.get("kind", "single")
    if kind not in KINDS:
        raise InvalidTrafficPolicy(f"'kind' must be one of {list(KINDS)}. Got {kind!r} instead.")
    weight = data.get("weight", 0.0 if kind in ("single", "shadow") else None)
    if kind in ("canary", "ab"):
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
            raise InvalidTrafficPolicy(f"'weight' of a {kind} policy must be a number in [0, 1]. Got {weight!r} instead.")
    key = data.get("key")
    if kind == "ab":
        where, _, name = (key or "").partition(":") if isinstance(key, str) else ("", "", "")
        if where not in ("header", "input") or not name:
            raise InvalidTrafficPolicy(f"'key' of an ab policy must be 'header:NAME' or 'input:COLUMN'. Got {key!r} instead.")
    challenger = data.get("challenger", "challenger")
    if not isinstance(challenger, str) or not challenger or "/" in challenger or "@" in challenger:
        raise InvalidTrafficPolicy(f"'challenger' must be an alias or a version number. Got {challenger!r} instead.")
    return TrafficPolicy(kind=kind, weight=float(weight or 0.0), key=key if kind == "ab" else None,
                         challenger=challenger)
