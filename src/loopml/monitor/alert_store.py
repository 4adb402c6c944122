"""Alert state and the notification outbox, in SQLite (the workspace's ``state.db``)."""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import asdict, fields
from pathlib import Path
from typing import Iterator

from loopml.monitor.alerts import AlertEvent, AlertState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_state (
    rule TEXT NOT NULL, model TEXT NOT NULL, status TEXT NOT NULL, breaches INTEGER NOT NULL,
    value REAL, since REAL, last_notified REAL, last_window_end REAL, updated REAL,
    PRIMARY KEY (rule, model)
);
CREATE TABLE IF NOT EXISTS alert_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, rule TEXT NOT NULL, model TEXT NOT NULL, kind TEXT NOT NULL,
    value REAL, threshold REAL, severity TEXT, message TEXT, ts REAL, window_end REAL,
    delivered INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT
);
CREATE INDEX IF NOT EXISTS alert_events_pending ON alert_events (delivered, id);
"""
_STATE_COLS = [f.name for f in fields(AlertState)]
_EVENT_COLS = [f.name for f in fields(AlertEvent) if f.name not in ("id", "delivered")]


class AlertStore:
    """Open with :meth:`open` (the constructor does no I/O)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._con: sqlite3.Connection | None = None

    def open(self) -> "AlertStore":
        if self._con is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._con.row_factory = sqlite3.Row
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.executescript(_SCHEMA)
        return self

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> "AlertStore":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def con(self) -> sqlite3.Connection:
        return self.open()._con  # type: ignore[return-value]

    @contextlib.contextmanager
    def transaction(self) -> Iterator["AlertStore"]:
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def get_state(self, rule: str, model: str) -> AlertState | None:
        row = self.con.execute("SELECT * FROM alert_state WHERE rule = ? AND model = ?", (rule, model)).fetchone()
        return AlertState(**{k: row[k] for k in _STATE_COLS}) if row else None

    def put_state(self, state: AlertState) -> None:
        d = asdict(state)
        self.con.execute(
            f"INSERT OR REPLACE INTO alert_state ({', '.join(_STATE_COLS)}) VALUES ({', '.join('?' * len(_STATE_COLS))})",
            [d[k] for k in _STATE_COLS])

    def states(self, *, active_only: bool = False) -> list[AlertState]:
        sql = "SELECT * FROM alert_state"
        if active_only:
            sql += " WHERE status != 'inactive'"
        rows = self.con.execute(sql + " ORDER BY model, rule").fetchall()
        return [AlertState(**{k: r[k] for k in _STATE_COLS}) for r in rows]

    def add_event(self, event: AlertEvent) -> int:
        d = asdict(event)
        cur = self.con.execute(
            f"INSERT INTO alert_events ({', '.join(_EVENT_COLS)}) VALUES ({', '.join('?' * len(_EVENT_COLS))})",
            [d[k] for k in _EVENT_COLS])
        return int(cur.lastrowid)

    def events(self, *, pending_only: bool = False, limit: int = 100) -> list[AlertEvent]:
        sql = "SELECT * FROM alert_events"
        if pending_only:
            sql += " WHERE delivered = 0"
        rows = self.con.execute(sql + " ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        out = [AlertEvent(**{k: r[k] for k in _EVENT_COLS}, id=r["id"], delivered=bool(r["delivered"])) for r in rows]
        return out[::-1]

    def mark_delivered(self, event_id: int) -> None:
        self.con.execute("UPDATE alert_events SET delivered = 1, attempts = attempts + 1 WHERE id = ?", (event_id,))

    def mark_failed(self, event_id: int, error: str) -> None:
        self.con.execute("UPDATE alert_events SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                         (error[:500], event_id))
