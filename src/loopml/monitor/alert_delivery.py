"""Deliver queued alert notifications: to the log (always) and to the rule's webhooks.

At-least-once: an event stays pending until every webhook of its rule answered 2xx;
a pending event is retried on the next call (after a restart too). Each webhook gets the
JSON of :meth:`~loopml.monitor.alerts.AlertEvent.payload`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from loopml.monitor.alert_store import AlertStore
from loopml.monitor.alerts import AlertEvent, AlertRule

log = logging.getLogger("loopml.alerts")


def deliver_pending(store: AlertStore, rules: list[AlertRule], *, log_path: str | Path | None = None,
                    timeout: float = 5.0) -> tuple[list[AlertEvent], list[tuple[AlertEvent, str]]]:
    """Send every undelivered event; returns ``(delivered, [(failed, error)])``."""
    import httpx

    by_name = {r.name: r for r in rules}
    delivered: list[AlertEvent] = []
    failed: list[tuple[AlertEvent, str]] = []
    pending = store.events(pending_only=True, limit=1000)
    if not pending:
        return delivered, failed
    with httpx.Client(timeout=timeout) as client:
        for event in pending:
            rule = by_name.get(event.rule)
            errors = []
            for url in (rule.webhooks if rule else []):
                try:
                    resp = client.post(url, json=event.payload())
                    if resp.status_code // 100 != 2:
                        errors.append(f"{url}: HTTP {resp.status_code}")
                except httpx.HTTPError as exc:
                    errors.append(f"{url}: {type(exc).__name__}: {exc}")
            if errors:
                store.mark_failed(event.id, "; ".join(errors))
                failed.append((event, "; ".join(errors)))
                continue
            _to_log(event, log_path)
            store.mark_delivered(event.id)
            event.delivered = True
            delivered.append(event)
    return delivered, failed


def _to_log(event: AlertEvent, log_path: str | Path | None) -> None:
    level = logging.WARNING if event.kind == "firing" else logging.INFO
    log.log(level, event.message)
    if log_path is not None:
        p = Path(log_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "a") as fh:
            fh.write(json.dumps(event.payload()) + "\n")
