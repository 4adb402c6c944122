"""metav1.Condition helpers for the status of loopml's custom resources. Pure.

A condition list holds one entry per ``type``. Setting a condition replaces the entry of its
type; ``lastTransitionTime`` moves only when the ``status`` changes (a new reason or message
on the same status is an update, not a transition), as the Kubernetes API conventions ask,
and every entry carries the ``observedGeneration`` of the spec it was computed from.
"""

from __future__ import annotations

import datetime
from typing import Any, Iterable

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


def now() -> str:
    """RFC 3339 UTC time with second precision, as metav1.Time serialises."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(type_: str, status: bool | str, reason: str, message: str = "", generation: int | None = None,
              at: str | None = None) -> dict[str, Any]:
    if isinstance(status, bool):
        status = TRUE if status else FALSE
    if status not in (TRUE, FALSE, UNKNOWN):
        raise ValueError(f"condition status must be True, False or Unknown, not {status!r}")
    c = {"type": type_, "status": status, "reason": reason, "message": message,
         "lastTransitionTime": at or now()}
    if generation is not None:
        c["observedGeneration"] = int(generation)
    return c


def find(conditions: Iterable[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions or () if c.get("type") == type_), None)


def is_true(conditions: Iterable[dict[str, Any]] | None, type_: str) -> bool:
    c = find(conditions, type_)
    return bool(c and c.get("status") == TRUE)


def set_condition(conditions: Iterable[dict[str, Any]] | None, new: dict[str, Any]) -> list[dict[str, Any]]:
    """A new list with ``new`` in place of the entry of its type (appended when absent); the
    old ``lastTransitionTime`` is kept when the status did not change."""
    out: list[dict[str, Any]] = []
    replaced = False
    for c in conditions or ():
        if c.get("type") != new["type"]:
            out.append(dict(c))
            continue
        merged = dict(new)
        if c.get("status") == new["status"] and c.get("lastTransitionTime"):
            merged["lastTransitionTime"] = c["lastTransitionTime"]
        out.append(merged)
        replaced = True
    if not replaced:
        out.append(dict(new))
    return out


def set_many(conditions: Iterable[dict[str, Any]] | None, *new: dict[str, Any]) -> list[dict[str, Any]]:
    out = list(conditions or ())
    for c in new:
        out = set_condition(out, c)
    return out
