"""The append-only audit log of alias changes: one JSON line per change, fsynced.

It is the source of truth for ``loopml history`` and for rollback's "previous champion";
MLflow version tags carry the same facts for people browsing the MLflow UI.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path


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


def current_user() -> str:
    return os.environ.get("LOOPML_USER") or _login()


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in some containers
        return "unknown"


def record_event(path: Path, model: str, action: str, why: str, *, version: str | None = None,
                 previous: str | None = None, evidence: dict | None = None, who: str | None = None,
                 alias: str = "traffic") -> AliasChange:
    """Append a decision that is not an alias change (a rollout step, a trigger) to the audit log."""
    change = AliasChange(ts=now(), model=model, alias=alias, version=version, previous=previous,
                         who=who or current_user(), why=why, action=action, evidence=evidence)
    append(path, change)
    return change


def append(path: Path, change: AliasChange) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(change.to_dict(), sort_keys=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # who changed what is private
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: Path, model: str | None = None) -> list[AliasChange]:
    if not path.exists():
        return []
    out = []
    for raw in path.read_text().splitlines():
        if not raw.strip():
            continue
        try:
            d = json.loads(raw)
        except json.JSONDecodeError:
            continue  # a torn last line after a crash is skipped, never fatal
        if model is None or d.get("model") == model:
            known = {k: v for k, v in d.items() if k in AliasChange.__dataclass_fields__}
            out.append(AliasChange(**known))
    return out


def now() -> float:
    return time.time()
