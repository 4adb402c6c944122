"""loopml's own transactional state: rollouts and triggers, in the state store
(``LOOPML_STATE_URI``: the workspace's SQLite ``state.db`` by default, or PostgreSQL).

Every change is one transaction, so a controller killed at any instant leaves either the
state before a change or the state after it. A partial unique index makes "at most one
active rollout per model" a fact of the database, not of the code, on both back ends. On
PostgreSQL the transactions are SERIALIZABLE and re-run when they lose a conflict
(:meth:`loopml.store.base.Store.run`), so two writers behave as one after the other.

``retries`` remembers, per model and cause, how often a retraining failed and when the next
try is due, so a failing retrain backs off exponentially instead of running on every check.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from loopml.errors import LoopmlError
from loopml.store import Store, open_store
from loopml.store.schema import ACTIVE, kv, retries as retries_t, rollouts as rollouts_t, triggers as triggers_t
from loopml.store.upsert import upsert

T = TypeVar("T")
FINAL = ("promoted", "rolled_back", "aborted", "rejected")

__all__ = ["ACTIVE", "FINAL", "Rollout", "Trigger", "Retry", "StateStore", "StaleRollout", "RolloutConflict",
           "store_uri"]


def store_uri(where: str | os.PathLike) -> str:
    """A store URI from a URI or a SQLite file path (how callers always named ``state.db``)."""
    text = str(where)
    return text if "://" in text else f"sqlite:///{Path(text).resolve()}"


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
    """Rollouts and triggers of one workspace: ``StateStore(ws.state_uri)`` (a ``sqlite:///`` or
    ``postgresql://`` URI; a bare path means a SQLite file). The constructor does no I/O; the
    first use connects and creates the tables."""

    def __init__(self, where: str | os.PathLike) -> None:
        self.uri = store_uri(where)

    @property
    def store(self) -> Store:
        return open_store(self.uri)  # a dict look-up once open; never a stale (evicted) store

    def _run(self, fn: Callable[[Any], T]) -> T:
        return self.store.run(fn)

    # -- rollouts ---------------------------------------------------------------------------
    def start_rollout(self, model: str, challenger: str, champion: str | None, trigger_id: int | None = None) -> Rollout:
        """A new running rollout; :class:`RolloutConflict` when the model has an active one."""
        now = time.time()

        def go(con) -> int:
            return con.execute(rollouts_t.insert().values(
                model=model, challenger=challenger, champion=champion, status="running", step=0, step_started=now,
                baseline="{}", decisions="[]", trigger_id=trigger_id, created=now, updated=now)).inserted_primary_key[0]
        try:
            rid = self._run(go)
        except IntegrityError as exc:
            raise RolloutConflict(model) from exc
        return self.rollout(rid)

    def rollout(self, rollout_id: int) -> Rollout:
        row = self._run(lambda con: con.execute(select(rollouts_t).where(rollouts_t.c.id == rollout_id)).mappings().one())
        return _rollout(dict(row))

    def active_rollout(self, model: str) -> Rollout | None:
        found = self.rollouts(model, active_only=True)
        return found[0] if found else None

    def rollouts(self, model: str | None = None, active_only: bool = False, limit: int = 50) -> list[Rollout]:
        q = select(rollouts_t)
        if model:
            q = q.where(rollouts_t.c.model == model)
        if active_only:
            q = q.where(rollouts_t.c.status.in_(ACTIVE))
        q = q.order_by(rollouts_t.c.id.desc()).limit(int(limit))
        return [_rollout(dict(r)) for r in self._run(lambda con: con.execute(q).mappings().all())]

    def update_rollout(self, rollout: Rollout, *, expect_status: str | None = None, decision: dict | None = None,
                       **changes: Any) -> Rollout:
        """Change a rollout in one transaction; with ``expect_status``, only if it still has that status."""
        def go(con) -> None:
            # FOR UPDATE: on PostgreSQL the row is ours until commit (SQLite: BEGIN IMMEDIATE already)
            row = con.execute(select(rollouts_t.c.status, rollouts_t.c.decisions)
                              .where(rollouts_t.c.id == rollout.id).with_for_update()).one()
            if expect_status is not None and row.status != expect_status:
                raise StaleRollout(rollout.id, row.status, expect_status)
            decisions = json.loads(row.decisions)
            if decision is not None:
                decisions.append(decision)
            sets = {k: (json.dumps(v) if k == "baseline" else v) for k, v in changes.items()}
            sets["decisions"] = json.dumps(decisions, default=str)
            sets["updated"] = time.time()
            con.execute(update(rollouts_t).where(rollouts_t.c.id == rollout.id).values(**sets))
        self._run(go)
        return self.rollout(rollout.id)

    # -- triggers ---------------------------------------------------------------------------
    def add_trigger(self, model: str, kind: str, cause: str, debounce_s: float = 0.0) -> Trigger:
        """Queue a trigger; one already queued within ``debounce_s`` absorbs it (recorded as merged)."""
        t = triggers_t.c

        def go(con) -> int:
            now = time.time()
            queued = con.execute(select(t.id).where(t.model == model, t.status == "queued")
                                 .order_by(t.id).limit(1)).scalar()
            recent = con.execute(select(t.id).where(t.model == model, t.kind == kind, t.created > now - debounce_s,
                                                    t.status.in_(("queued", "running", "done")))
                                 .order_by(t.id.desc()).limit(1)).scalar() if debounce_s else None
            into = queued or recent
            status = "merged" if into else "queued"
            return con.execute(triggers_t.insert().values(
                model=model, kind=kind, cause=cause, status=status, created=now, updated=now,
                result=f"merged into trigger {into}" if into else None)).inserted_primary_key[0]
        return self.trigger(self._run(go))

    def trigger(self, trigger_id: int) -> Trigger:
        row = self._run(lambda con: con.execute(select(triggers_t).where(triggers_t.c.id == trigger_id)).mappings().one())
        return Trigger(**dict(row))

    def triggers(self, model: str | None = None, limit: int = 50) -> list[Trigger]:
        q = select(triggers_t)
        if model:
            q = q.where(triggers_t.c.model == model)
        q = q.order_by(triggers_t.c.id.desc()).limit(int(limit))
        return [Trigger(**dict(r)) for r in self._run(lambda con: con.execute(q).mappings().all())]

    def claim_trigger(self, model: str) -> Trigger | None:
        """Take the oldest queued trigger (marking it running), or a running one left by a crash."""
        t = triggers_t.c

        def go(con) -> int | None:
            tid = con.execute(select(t.id).where(t.model == model, t.status == "running").order_by(t.id).limit(1)).scalar()
            if tid is None:
                tid = con.execute(select(t.id).where(t.model == model, t.status == "queued").order_by(t.id).limit(1)).scalar()
            if tid is not None:
                con.execute(update(triggers_t).where(t.id == tid).values(status="running", updated=time.time()))
            return tid
        tid = self._run(go)
        return None if tid is None else self.trigger(tid)

    def finish_trigger(self, trigger_id: int, status: str, result: str) -> None:
        self._run(lambda con: con.execute(update(triggers_t).where(triggers_t.c.id == trigger_id)
                                          .values(status=status, result=result, updated=time.time())))

    # -- retries of failed retrainings --------------------------------------------------------
    def record_failure(self, model: str, cause: str, kind: str, detail: str, error: str, *, now: float,
                       base_s: float, cap_s: float) -> Retry:
        """Count one more failure of ``cause``; the next try waits ``base_s`` x 2^(failures-1), at most ``cap_s``."""
        r = retries_t.c

        def go(con) -> None:
            failures = (con.execute(select(r.failures).where(r.model == model, r.cause == cause)).scalar() or 0) + 1
            delay = max(base_s, min(cap_s, base_s * 2.0 ** min(failures - 1, 30)))
            upsert(con, retries_t, {"model": model, "cause": cause}, {
                "kind": kind, "detail": detail, "failures": failures, "next_try": now + delay, "waiting": 1,
                "error": error, "updated": time.time()})
        self._run(go)
        return self.retry(model, cause)  # type: ignore[return-value]

    def retry(self, model: str, cause: str) -> Retry | None:
        found = [r for r in self.retries(model) if r.cause == cause]
        return found[0] if found else None

    def retries(self, model: str) -> list[Retry]:
        q = select(retries_t).where(retries_t.c.model == model).order_by(retries_t.c.next_try)
        return [_retry(dict(r)) for r in self._run(lambda con: con.execute(q).mappings().all())]

    def take_due_retries(self, model: str, now: float) -> list[Retry]:
        """The waiting retries due at ``now``, marked taken (the caller queues their triggers)."""
        r = retries_t.c

        def go(con) -> list[Retry]:
            due = [_retry(dict(row)) for row in con.execute(
                select(retries_t).where(r.model == model, r.waiting == 1, r.next_try <= now).order_by(r.next_try)
            ).mappings().all()]
            for d in due:
                con.execute(update(retries_t).where(r.model == model, r.cause == d.cause).values(waiting=0))
            return due
        return self._run(go)

    def clear_retries(self, model: str) -> None:
        """A retraining succeeded: every backoff of the model ends."""
        self._run(lambda con: con.execute(retries_t.delete().where(retries_t.c.model == model)))

    # -- small values -----------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        value = self._run(lambda con: con.execute(select(kv.c.value).where(kv.c.key == key)).scalar())
        return json.loads(value) if value is not None else default

    def put(self, key: str, value: Any) -> None:
        text = json.dumps(value, default=str)
        self._run(lambda con: upsert(con, kv, {"key": key}, {"value": text}))


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


class RolloutConflict(LoopmlError):
    """The model already has an active rollout (the database's one-active-rollout index said so)."""

    http_status = 409

    def __init__(self, model: str) -> None:
        super().__init__(f"model {model!r} already has an active rollout; finish or abort it first "
                         "('loopml rollout status')")
        self.model = model
