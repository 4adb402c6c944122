"""loopml's own transactional state: rollouts and triggers, in SQLite (``state.db``).

Every change is one transaction (``BEGIN IMMEDIATE``), so a controller killed at any
instant leaves either the state before a change or the state after it. A partial unique
index makes "at most one active rollout per model" a fact of the database, not of the code.

``retries`` remembers, per model and cause, how often a retraining failed and when the next
try is due, so a failing retrain backs off exponentially instead of running on every check.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from loopml.errors import LoopmlError

ACTIVE = ("running", "paused", "promoting", "rolling_back")
FINAL = ("promoted", "rolled_back", "aborted", "rejected")

SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    challenger TEXT NOT NULL,
    champion TEXT,
    status TEXT NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    step_started REAL NOT NULL,
    baseline TEXT NOT NULL DEFAULT '{}',
    decisions TEXT NOT NULL DEFAULT '[]',
    trigger_id INTEGER,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS one_active_rollout ON rollouts(model)
    WHERE status IN ('running', 'paused', 'promoting', 'rolling_back');
CREATE TABLE IF NOT EXISTS triggers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    kind TEXT NOT NULL,
    cause TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    result TEXT
);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS retries (
    model TEXT NOT NULL,
    cause TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    failures INTEGER NOT NULL,
    next_try REAL NOT NULL,
    waiting INTEGER NOT NULL,
    error TEXT,
    updated REAL NOT NULL,
    PRIMARY KEY (model, cause)
);
"""


@dataclass
class Rollout:
    id: int
    model: str
    challenger: str
    champion: str | None
    status: str
    step: int
    step_started: float
    baseline: dict[str, Any] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    trigger_id: int | None = None
    created: float = 0.0
    updated: float = 0.0

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Trigger:
    id: int
    model: str
    kind: str
    cause: str
    status: str  # queued | merged | running | done | failed
    created: float
    updated: float
    result: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Retry:
    """A cause whose retraining failed: ``failures`` in a row, the next try at ``next_try``
    (the controller's clock); ``waiting`` until the controller queues that try."""

    model: str
    cause: str  # the backoff key: trigger kind + its cause with numbers blanked
    kind: str
    detail: str  # the trigger's cause as it was said
    failures: int
    next_try: float
    waiting: bool
    error: str | None
    updated: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StateStore:
    """Rollouts and triggers of one workspace. Opening it creates the tables."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.executescript(SCHEMA)
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    # -- rollouts ---------------------------------------------------------------------------
    def start_rollout(self, model: str, challenger: str, champion: str | None, trigger_id: int | None = None) -> Rollout:
        now = time.time()
        with self.tx() as con:
            cur = con.execute(
                "INSERT INTO rollouts(model, challenger, champion, status, step, step_started, trigger_id, created, updated)"
                " VALUES (?, ?, ?, 'running', 0, ?, ?, ?, ?)", (model, challenger, champion, now, trigger_id, now, now))
            rid = cur.lastrowid
        return self.rollout(rid)

    def rollout(self, rollout_id: int) -> Rollout:
        with self.tx() as con:
            row = con.execute("SELECT * FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
            cols = [d[0] for d in con.execute("SELECT * FROM rollouts LIMIT 0").description]
        return _rollout(dict(zip(cols, row)))

    def active_rollout(self, model: str) -> Rollout | None:
        found = self.rollouts(model, active_only=True)
        return found[0] if found else None

    def rollouts(self, model: str | None = None, active_only: bool = False, limit: int = 50) -> list[Rollout]:
        sql, args = "SELECT * FROM rollouts", []
        where = []
        if model:
            where.append("model = ?")
            args.append(model)
        if active_only:
            where.append("status IN ('running', 'paused', 'promoting', 'rolling_back')")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY id DESC LIMIT {int(limit)}"
        with self.tx() as con:
            cur = con.execute(sql, args)
            cols = [d[0] for d in cur.description]
            return [_rollout(dict(zip(cols, r))) for r in cur.fetchall()]

    def update_rollout(self, rollout: Rollout, *, expect_status: str | None = None, decision: dict | None = None,
                       **changes: Any) -> Rollout:
        """Change a rollout in one transaction; with ``expect_status``, only if it still has that status."""
        with self.tx() as con:
            row = con.execute("SELECT status, decisions FROM rollouts WHERE id = ?", (rollout.id,)).fetchone()
            if expect_status is not None and row[0] != expect_status:
                raise StaleRollout(rollout.id, row[0], expect_status)
            decisions = json.loads(row[1])
            if decision is not None:
                decisions.append(decision)
            sets = {k: (json.dumps(v) if k == "baseline" else v) for k, v in changes.items()}
            sets["decisions"] = json.dumps(decisions, default=str)
            sets["updated"] = time.time()
            con.execute(f"UPDATE rollouts SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?",
                        [*sets.values(), rollout.id])
        return self.rollout(rollout.id)

    # -- triggers ---------------------------------------------------------------------------
    def add_trigger(self, model: str, kind: str, cause: str, debounce_s: float = 0.0) -> Trigger:
        """Queue a trigger; one already queued within ``debounce_s`` absorbs it (recorded as merged)."""
        now = time.time()
        with self.tx() as con:
            queued = con.execute("SELECT id FROM triggers WHERE model = ? AND status = 'queued' ORDER BY id LIMIT 1",
                                 (model,)).fetchone()
            recent = con.execute("SELECT id FROM triggers WHERE model = ? AND kind = ? AND created > ? "
                                 "AND status IN ('queued', 'running', 'done') ORDER BY id DESC LIMIT 1",
                                 (model, kind, now - debounce_s)).fetchone() if debounce_s else None
            status = "merged" if (queued or recent) else "queued"
            result = f"merged into trigger {(queued or recent)[0]}" if status == "merged" else None
            cur = con.execute("INSERT INTO triggers(model, kind, cause, status, created, updated, result) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?)", (model, kind, cause, status, now, now, result))
            tid = cur.lastrowid
        return self.trigger(tid)

    def trigger(self, trigger_id: int) -> Trigger:
        with self.tx() as con:
            cur = con.execute("SELECT * FROM triggers WHERE id = ?", (trigger_id,))
            cols = [d[0] for d in cur.description]
            return Trigger(**dict(zip(cols, cur.fetchone())))

    def triggers(self, model: str | None = None, limit: int = 50) -> list[Trigger]:
        sql, args = "SELECT * FROM triggers", []
        if model:
            sql += " WHERE model = ?"
            args.append(model)
        with self.tx() as con:
            cur = con.execute(sql + f" ORDER BY id DESC LIMIT {int(limit)}", args)
            cols = [d[0] for d in cur.description]
            return [Trigger(**dict(zip(cols, r))) for r in cur.fetchall()]

    def claim_trigger(self, model: str) -> Trigger | None:
        """Take the oldest queued trigger (marking it running), or a running one left by a crash."""
        with self.tx() as con:
            row = con.execute("SELECT id FROM triggers WHERE model = ? AND status = 'running' ORDER BY id LIMIT 1",
                              (model,)).fetchone()
            if row is None:
                row = con.execute("SELECT id FROM triggers WHERE model = ? AND status = 'queued' ORDER BY id LIMIT 1",
                                  (model,)).fetchone()
            if row is None:
                return None
            con.execute("UPDATE triggers SET status = 'running', updated = ? WHERE id = ?", (time.time(), row[0]))
        return self.trigger(row[0])

    def finish_trigger(self, trigger_id: int, status: str, result: str) -> None:
        with self.tx() as con:
            con.execute("UPDATE triggers SET status = ?, result = ?, updated = ? WHERE id = ?",
                        (status, result, time.time(), trigger_id))

    # -- retries of failed retrainings --------------------------------------------------------
    def record_failure(self, model: str, cause: str, kind: str, detail: str, error: str, *, now: float,
                       base_s: float, cap_s: float) -> Retry:
        """Count one more failure of ``cause``; the next try waits ``base_s`` x 2^(failures-1), at most ``cap_s``."""
        with self.tx() as con:
            row = con.execute("SELECT failures FROM retries WHERE model = ? AND cause = ?", (model, cause)).fetchone()
            failures = (row[0] if row else 0) + 1
            delay = max(base_s, min(cap_s, base_s * 2.0 ** min(failures - 1, 30)))
            con.execute("INSERT INTO retries(model, cause, kind, detail, failures, next_try, waiting, error, updated) "
                        "VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?) ON CONFLICT(model, cause) DO UPDATE SET "
                        "kind = excluded.kind, detail = excluded.detail, failures = excluded.failures, "
                        "next_try = excluded.next_try, waiting = 1, error = excluded.error, updated = excluded.updated",
                        (model, cause, kind, detail, failures, now + delay, error, time.time()))
        return self.retry(model, cause)

    def retry(self, model: str, cause: str) -> Retry | None:
        found = [r for r in self.retries(model) if r.cause == cause]
        return found[0] if found else None

    def retries(self, model: str) -> list[Retry]:
        with self.tx() as con:
            cur = con.execute("SELECT * FROM retries WHERE model = ? ORDER BY next_try", (model,))
            cols = [d[0] for d in cur.description]
            return [_retry(dict(zip(cols, r))) for r in cur.fetchall()]

    def take_due_retries(self, model: str, now: float) -> list[Retry]:
        """The waiting retries due at ``now``, marked taken (the caller queues their triggers)."""
        with self.tx() as con:
            cur = con.execute("SELECT * FROM retries WHERE model = ? AND waiting = 1 AND next_try <= ? ORDER BY next_try",
                              (model, now))
            cols = [d[0] for d in cur.description]
            due = [_retry(dict(zip(cols, r))) for r in cur.fetchall()]
            con.executemany("UPDATE retries SET waiting = 0 WHERE model = ? AND cause = ?",
                            [(model, r.cause) for r in due])
        return due

    def clear_retries(self, model: str) -> None:
        """A retraining succeeded: every backoff of the model ends."""
        with self.tx() as con:
            con.execute("DELETE FROM retries WHERE model = ?", (model,))

    # -- small values -----------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        with self.tx() as con:
            row = con.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def put(self, key: str, value: Any) -> None:
        with self.tx() as con:
            con.execute("INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (key, json.dumps(value, default=str)))


def _rollout(d: dict[str, Any]) -> Rollout:
    d["baseline"] = json.loads(d["baseline"] or "{}")
    d["decisions"] = json.loads(d["decisions"] or "[]")
    return Rollout(**d)


def _retry(d: dict[str, Any]) -> Retry:
    d["waiting"] = bool(d["waiting"])
    return Retry(**d)


class StaleRollout(LoopmlError):
    """Someone else changed the rollout first (a manual command, or another controller)."""

    http_status = 409

    def __init__(self, rollout_id: int, status: str, expected: str) -> None:
        super().__init__(f"rollout {rollout_id} is {status}, not {expected}; see 'loopml rollout status'")
        self.rollout_id = rollout_id
        self.status = status
