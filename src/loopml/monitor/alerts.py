"""Alert rules and their evaluation: threshold, for N windows, cooldown, dedup.

A rule watches one metric (see :mod:`loopml.monitor.metrics` for the names). Per
``(rule, model)``, each new window either breaches the threshold or not:

* ``for_windows`` consecutive breaching windows turn the alert ``firing`` and queue one
  ``firing`` notification, unless one was sent within ``cooldown`` (then it fires silently);
* while firing, further breaching windows send nothing (dedup);
* the first window that does not breach resolves it and queues a ``resolved`` notification;
* a window at or before the last one evaluated is ignored, so evaluating the same window
  again (after a restart, say) neither counts twice nor re-fires;
* a window where the metric is absent leaves the state unchanged.

State and notifications live in SQLite (:class:`~loopml.monitor.alert_store.AlertStore`),
changed in one transaction per evaluation; delivery happens after the commit and is
retried until it succeeds (an outbox), so a restart neither re-fires nor forgets.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from loopml.monitor.alert_store import AlertStore

_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


class AlertRule(BaseModel):
    """One rule, as written under ``monitoring.alerts`` in ``loopml.yaml``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    metric: str
    op: Literal[">", ">=", "<", "<="] = ">="
    threshold: float
    for_windows: int = Field(1, ge=1)
    cooldown: str = "1h"
    severity: Literal["info", "warning", "critical"] = "warning"
    model: str | None = None  # None: every model
    webhooks: list[str] = []
    summary: str | None = None

    @field_validator("cooldown")
    @classmethod
    def _duration(cls, v: str) -> str:
        from loopml.errors import MonitorError
        from loopml.monitor.windows import parse_duration

        try:
            parse_duration(v)
        except MonitorError as exc:
            raise ValueError(str(exc)) from None
        return v

    @property
    def cooldown_s(self) -> float:
        from loopml.monitor.windows import parse_duration

        return parse_duration(self.cooldown)

    def breached(self, value: float) -> bool:
        return bool(_OPS[self.op](value, self.threshold))

    def describe(self, value: float | None = None) -> str:
        text = self.summary or f"{self.metric} {self.op} {self.threshold:g}"
        return text if value is None else f"{text} (value {value:.4g})"


class AlertRules(BaseModel):
    """A list of rules (``monitoring.alerts``), with the spec's error messages."""

    model_config = ConfigDict(extra="forbid")
    rules: list[AlertRule] = []


def parse_rules(raw: Any, source: str = "loopml.yaml") -> list[AlertRule]:
    from pydantic import ValidationError

    from loopml.errors import SpecError

    try:
        return AlertRules.model_validate({"rules": raw or []}).rules
    except ValidationError as exc:
        problems = [f"monitoring.alerts.{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors()]
        raise SpecError(source, problems) from None


@dataclass
class AlertState:
    rule: str
    model: str
    status: str = "inactive"  # "inactive" | "pending" | "firing"
    breaches: int = 0
    value: float | None = None
    since: float | None = None  # when it started firing
    last_notified: float | None = None
    last_window_end: float | None = None
    updated: float | None = None


@dataclass
class AlertEvent:
    rule: str
    model: str
    kind: str  # "firing" | "resolved"
    value: float | None
    threshold: float
    severity: str
    message: str
    ts: float
    window_end: float
    id: int | None = None
    delivered: bool = False

    def payload(self) -> dict[str, Any]:
        """The JSON body a webhook receives (Alertmanager-like)."""
        return {"status": self.kind, "alert": self.rule, "model": self.model, "severity": self.severity,
                "value": self.value, "threshold": self.threshold, "message": self.message,
                "ts": self.ts, "window_end": self.window_end}


def step(rule: AlertRule, state: AlertState, value: float | None, window_end: float,
         now: float) -> AlertEvent | None:
    """Advance one rule's state by one window; return the notification to send, if any."""
    if state.last_window_end is not None and window_end <= state.last_window_end:
        return None  # already evaluated this window
    if value is None:
        return None  # no data: neither breach nor recovery
    state.last_window_end = window_end
    state.value = value
    state.updated = now
    if not rule.breached(value):
        was_firing = state.status == "firing"
        state.status, state.breaches, state.since = "inactive", 0, None
        if was_firing:
            return _event(rule, state, "resolved", value, window_end, now)
        return None
    state.breaches += 1
    if state.status == "firing":
        return None  # dedup: one notification per episode
    if state.breaches < rule.for_windows:
        state.status = "pending"
        return None
    state.status, state.since = "firing", now
    if state.last_notified is not None and now - state.last_notified < rule.cooldown_s:
        return None  # firing, but within the cooldown of the last notification
    state.last_notified = now
    return _event(rule, state, "firing", value, window_end, now)


def _event(rule: AlertRule, state: AlertState, kind: str, value: float, window_end: float, now: float) -> AlertEvent:
    verb = "FIRING" if kind == "firing" else "resolved"
    return AlertEvent(rule=rule.name, model=state.model, kind=kind, value=value, threshold=rule.threshold,
                      severity=rule.severity, message=f"[{verb}] {rule.name} on {state.model}: {rule.describe(value)}",
                      ts=now, window_end=window_end)


def evaluate(rules: list[AlertRule], model: str, metrics: dict[str, float], *, window_end: float,
             store: "AlertStore", now: float | None = None) -> list[AlertEvent]:
    """Evaluate every rule for one model's window, persist state and queue notifications.

    Returns the events queued by this call (deliver them with
    :func:`loopml.monitor.alert_delivery.deliver_pending`).
    """
    import time

    now = time.time() if now is None else now
    events: list[AlertEvent] = []
    with store.transaction() as tx:
        for rule in rules:
            if rule.model is not None and rule.model != model:
                continue
            state = tx.get_state(rule.name, model) or AlertState(rule=rule.name, model=model)
            event = step(rule, state, metrics.get(rule.metric), window_end, now)
            tx.put_state(state)
            if event is not None:
                event.id = tx.add_event(event)
                events.append(event)
    return events
