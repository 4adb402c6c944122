"""The append-only audit log of alias changes and loop decisions.

Its record of truth is the ``audit`` table of the state store (``LOOPML_STATE_URI``), so
every machine of a fleet appends to and reads one log; ``<home>/audit.jsonl`` (one JSON line
per change, fsynced, 0600) is kept as this machine's export for people and tools that read
files. It is the source of truth for ``loopml history`` and for rollback's "previous
champion"; MLflow version tags carry the same facts for people browsing the MLflow UI.

Functions take a :class:`~loopml.config.Workspace` (table + export) or, as before the
store, a bare JSONL path (that file only). A workspace's JSONL lines written before the
table existed are imported into it once, so no history is lost by upgrading.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("loopml.audit")


@dataclass
class AliasChange:
    ts: float
    model: str
    alias: str
    version: str | None
    previous: str | None
    who: str
    why: str
    action: str = "set"  # "set" | "rollback" | "rollout-<decision>" | "trigger"
    evidence: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


_ACTING: list[str] = []  # the verified token name a CLI process acts as (see cli.common.authorize)


def acting_as(name: str) -> None:
    """Record ``name`` (a verified token's name, never the token) as who acts in this process."""
    _ACTING[:] = [name]


def current_user() -> str:
    if _ACTING:
        return _ACTING[0]
    return os.environ.get("LOOPML_USER") or _login()


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in some containers
        return "unknown"


def record_event(where: Any, model: str, action: str, why: str, *, version: str | None = None,
                 previous: str | None = None, evidence: dict | None = None, who: str | None = None,
                 alias: str = "traffic") -> AliasChange:
    """Append a decision that is not an alias change (a rollout step, a trigger) to the audit log."""
    change = AliasChange(ts=now(), model=model, alias=alias, version=version, previous=previous,
                         who=who or current_user(), why=why, action=action, evidence=evidence)
    append(where, change)
    return change


def append(where: Any, change: AliasChange) -> None:
    """Record ``change``: in the store's table (committed before this returns), then in the
    JSONL export. An export that fails after the commit is logged, not raised: the record exists."""
    path, uri = _split(where)
    if uri is None:
        _append_line(path, change)
        return
    from loopml.store import open_store

    def go(con) -> None:
        _import_once(con, path)
        insert_change(con, change)

    open_store(uri).run(go)
    try:
        _append_line(path, change)
    except OSError as exc:
        log.warning("audit record stored; its export to %s failed: %s", path, exc)


def insert_change(con, change: AliasChange) -> None:
    """Append ``change`` to the table inside the caller's transaction (same commit as a state change)."""
    from loopml.store.schema import audit as table

    d = change.to_dict()
    d["evidence"] = json.dumps(d["evidence"], sort_keys=True, default=str) if d["evidence"] is not None else None
    con.execute(table.insert().values(**d))


def read(where: Any, model: str | None = None) -> list[AliasChange]:
    """The changes in order of recording, all or one model's."""
    path, uri = _split(where)
    if uri is None:
        return [c for c in _read_lines(path) if model is None or c.model == model]
    from sqlalchemy import select

    from loopml.store import open_store
    from loopml.store.schema import audit as table

    def go(con) -> list[Any]:
        _import_once(con, path)
        q = select(table)
        if model is not None:
            q = q.where(table.c.model == model)
        return con.execute(q.order_by(table.c.id)).mappings().all()

    out = []
    for row in open_store(uri).run(go):
        d = {k: row[k] for k in AliasChange.__dataclass_fields__}
        d["evidence"] = json.loads(d["evidence"]) if d["evidence"] else None
        out.append(AliasChange(**d))
    return out


def now() -> float:
    return time.time()


def _split(where: Any) -> tuple[Path, str | None]:
    """(the JSONL file, the store URI or None) for a Workspace or a bare path."""
    if hasattr(where, "state_uri") and hasattr(where, "audit_log"):
        return Path(where.audit_log), where.state_uri
    return Path(where), None


def _import_once(con, path: Path) -> None:
    """Copy the lines written before the table existed into it, once per store (a marker in
    ``kv``, written in the same transaction as the copied rows). Once per store, not per path:
    a copied workspace carries its state.db along with its export, whose lines are already rows."""
    from sqlalchemy import select

    from loopml.store.schema import kv

    marker = "audit.imported"
    if con.execute(select(kv.c.key).where(kv.c.key == marker)).scalar() is not None:
        return
    for change in _read_lines(path):
        insert_change(con, change)
    con.execute(kv.insert().values(key=marker, value=json.dumps(time.time())))


def _append_line(path: Path, change: AliasChange) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(change.to_dict(), sort_keys=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # who changed what is private
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_lines(path: Path) -> list[AliasChange]:
    if not path.is_file():
        return []
    out = []
    for raw in path.read_text().splitlines():
        if not raw.strip():
            continue
        try:
            d = json.loads(raw)
        except json.JSONDecodeError:
            continue  # a torn last line after a crash is skipped, never fatal
        if isinstance(d, dict) and "model" in d:
            known = {k: v for k, v in d.items() if k in AliasChange.__dataclass_fields__}
            try:
                out.append(AliasChange(**known))
            except TypeError:
                continue  # a line missing fields (torn mid-object but valid JSON) is skipped too
    return out
