"""Alert state and the notification outbox, in the state store (``LOOPML_STATE_URI``: the
workspace's SQLite ``state.db`` by default, or PostgreSQL), so every monitor of a fleet sees
one state per (rule, model) and no notification is sent twice or lost."""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, fields
from typing import Any, Callable, Iterator, TypeVar

from sqlalchemy import select, update

from loopml.monitor.alerts import AlertEvent, AlertState
from loopml.store import Store, open_store
from loopml.store.schema import alert_events, alert_state
from loopml.store.upsert import upsert

T = TypeVar("T")
_STATE_COLS = [f.name for f in fields(AlertState)]
_EVENT_COLS = [f.name for f in fields(AlertEvent) if f.name not in ("id", "delivered")]


class AlertStore:
    """``AlertStore(ws.state_uri)`` (a bare path means a SQLite file). Open with :meth:`open`
    or ``with`` (the constructor does no I/O). Outside :meth:`transaction` each call is its
    own transaction."""

    def __init__(self, where: str | os.PathLike) -> None:
        from loopml.loop.state import store_uri

        self.uri = store_uri(where)
        self._tx: Any = None  # the connection of the open transaction, if any

    @property
    def _store(self) -> Store:
        return open_store(self.uri)  # connects (and migrates) on first use in this process

    def open(self) -> "AlertStore":
        self._store  # noqa: B018 - fail here (closed) rather than half way through a caller's work
        return self

    def close(self) -> None:
        pass  # the store's connections are pooled per process; nothing to close here

    def __enter__(self) -> "AlertStore":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _do(self, fn: Callable[[Any], T]) -> T:
        if self._tx is not None:
            return fn(self._tx)
        return self._store.run(fn)

    @contextlib.contextmanager
    def transaction(self) -> Iterator["AlertStore"]:
        """Several calls as one transaction (not re-run on a PostgreSQL conflict: the next
        evaluation of the window starts from what was committed)."""
        with self._store.tx() as con:
            self._tx = con
            try:
                yield self
            finally:
                self._tx = None

    def get_state(self, rule: str, model: str) -> AlertState | None:
        q = select(alert_state).where(alert_state.c.rule == rule, alert_state.c.model == model)
        row = self._do(lambda con: con.execute(q).mappings().first())
        return AlertState(**{k: row[k] for k in _STATE_COLS}) if row else None

    def put_state(self, state: AlertState) -> None:
        d = asdict(state)
        keys = {"rule": d["rule"], "model": d["model"]}
        self._do(lambda con: upsert(con, alert_state, keys, {k: d[k] for k in _STATE_COLS if k not in keys}))

    def states(self, *, active_only: bool = False) -> list[AlertState]:
        q = select(alert_state)
        if active_only:
            q = q.where(alert_state.c.status != "inactive")
        rows = self._do(lambda con: con.execute(q.order_by(alert_state.c.model, alert_state.c.rule)).mappings().all())
        return [AlertState(**{k: r[k] for k in _STATE_COLS}) for r in rows]

    def add_event(self, event: AlertEvent) -> int:
        d = asdict(event)
        stmt = alert_events.insert().values(**{k: d[k] for k in _EVENT_COLS})
        return int(self._do(lambda con: con.execute(stmt).inserted_primary_key[0]))

    def events(self, *, pending_only: bool = False, limit: int = 100) -> list[AlertEvent]:
        q = select(alert_events)
        if pending_only:
            q = q.where(alert_events.c.delivered == 0)
        rows = self._do(lambda con: con.execute(q.order_by(alert_events.c.id.desc()).limit(int(limit))).mappings().all())
        out = [AlertEvent(**{k: r[k] for k in _EVENT_COLS}, id=r["id"], delivered=bool(r["delivered"])) for r in rows]
        return out[::-1]

    def mark_delivered(self, event_id: int) -> None:
        e = alert_events.c
        self._do(lambda con: con.execute(update(alert_events).where(e.id == event_id)
                                         .values(delivered=1, attempts=e.attempts + 1)))

    def mark_failed(self, event_id: int, error: str) -> None:
        e = alert_events.c
        self._do(lambda con: con.execute(update(alert_events).where(e.id == event_id)
                                         .values(attempts=e.attempts + 1, last_error=error[:500])))
