"""Endpoint traffic policies shared by every worker of a server, through the workspace.

With ``--workers N`` an admin request reaches one worker only. That worker writes the
policy to ``<home>/run/traffic-<model>.json`` (temp file, fsync, rename: a reader sees the
old file or the new one, never half of one) and every worker's poll loop re-reads the
file when its ``(mtime, inode)`` changed, so all of them apply the same policy within one
``poll_interval_s``. The file also survives a restart: a server starting on the workspace
applies the last policy set for each endpoint it serves.

With a PostgreSQL state store (``LOOPML_STATE_URI``) the replicas run on several machines
and share no folder, so the policies live in the store's ``policies`` table instead: a save
bumps the row's ``version`` in the same transaction, and every replica's poll compares one
integer per model, so all of them apply the same policy within one poll interval.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from loopml.errors import InvalidTrafficPolicy
from loopml.procs import pid_alive as _alive
from loopml.serve.traffic import TrafficPolicy, parse_policy

log = logging.getLogger("loopml.serve")


def policy_path(home: str | os.PathLike, model: str) -> Path:
    return Path(home) / "run" / f"traffic-{model}.json"


def save_policy(home: str | os.PathLike, model: str, policy: TrafficPolicy) -> Path:
    """Write ``policy`` for ``model`` atomically; returns the file."""
    from loopml.fileio import atomic_write_json

    return atomic_write_json(policy_path(home, model), policy.to_dict())


def file_signature(path: Path) -> tuple[int, int] | None:
    """``(mtime_ns, inode)`` of the file, None when it does not exist (one ``stat``)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ino


def load_policy(path: Path) -> TrafficPolicy | None:
    """The policy in ``path``; None when missing or unreadable (logged, the current one stays)."""
    try:
        return parse_policy(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, InvalidTrafficPolicy) as e:
        log.warning("ignoring traffic policy file %s: %s", path, e)
        return None


class PolicyFiles:
    """Remembers the signature of each model's policy file (or its row's version on a
    PostgreSQL store); :meth:`changed` returns the policies that changed since the last look
    (first look: any existing one). The constructor does no I/O."""

    def __init__(self, home: str | os.PathLike, state_uri: str | None = None) -> None:
        from loopml.store.base import scheme_of

        self.home = Path(home)
        self.uri = state_uri if state_uri and scheme_of(state_uri) == "postgresql" else None
        self._seen: dict[str, tuple[int, int] | int | None] = {}

    def changed(self, models: list[str]) -> dict[str, TrafficPolicy]:
        if self.uri is not None:
            return self._changed_rows(models)
        out = {}
        for model in models:
            path = policy_path(self.home, model)
            sig = file_signature(path)
            if model in self._seen and self._seen[model] == sig:
                continue
            self._seen[model] = sig
            if sig is not None:
                policy = load_policy(path)
                if policy is not None:
                    out[model] = policy
        return out

    def save(self, model: str, policy: TrafficPolicy) -> None:
        """Persist ``policy`` and remember it as seen (this process applies it itself)."""
        if self.uri is not None:
            self._seen[model] = save_policy_row(self.uri, model, policy)
            return
        path = save_policy(self.home, model, policy)
        self._seen[model] = file_signature(path)

    def _changed_rows(self, models: list[str]) -> dict[str, TrafficPolicy]:
        out = {}
        for model, (version, text) in policy_rows(self.uri, models).items():  # type: ignore[arg-type]
            if self._seen.get(model) == version:
                continue
            self._seen[model] = version
            try:
                out[model] = parse_policy(json.loads(text))
            except (ValueError, InvalidTrafficPolicy) as e:
                log.warning("ignoring traffic policy of %s (version %s) in the state store: %s", model, version, e)
        return out


def save_policy_row(uri: str, model: str, policy: TrafficPolicy) -> int:
    """Store ``policy`` for ``model`` in the state store's ``policies`` table; its new version."""
    import time

    from sqlalchemy import select

    from loopml.store import open_store
    from loopml.store.schema import policies
    from loopml.store.upsert import upsert

    text = json.dumps(policy.to_dict(), sort_keys=True)

    def go(con) -> int:
        current = con.execute(select(policies.c.version).where(policies.c.model == model).with_for_update()).scalar()
        version = (current or 0) + 1
        upsert(con, policies, {"model": model}, {"policy": text, "version": version, "updated": time.time()})
        return version
    return open_store(uri).run(go)


def policy_rows(uri: str, models: list[str]) -> dict[str, tuple[int, str]]:
    """{model: (version, policy JSON)} of the models that have a stored policy (one query)."""
    from sqlalchemy import select

    from loopml.store import open_store
    from loopml.store.schema import policies

    if not models:
        return {}
    q = select(policies.c.model, policies.c.version, policies.c.policy).where(policies.c.model.in_(models))
    return {r.model: (r.version, r.policy) for r in open_store(uri).run(lambda con: con.execute(q).all())}


class SharedEndpoints:
    """The endpoint set the workers of one master share (``--workers N``), with a barrier.

    An admin load, unload, traffic change or reload lands on one worker. That worker applies it,
    then publishes (:meth:`publish`) the resulting set of endpoints under a new ``generation`` in
    ``<home>/run/workers-<master pid>/endpoints.json`` (read-modify-write under ``flock``, so
    concurrent changes on two workers both survive; temp file + rename, so readers never see
    half of it). Every worker watches that file, applies a new generation (loads, unloads,
    re-reads the policy files, re-resolves aliases) and acknowledges it (:meth:`ack`) in its own file; the
    worker that published waits until every live sibling acknowledged (:meth:`pending`) before
    it answers. So once an admin call has returned, every worker serves the new state.
    """

    def __init__(self, home: str | os.PathLike, group: int, pid: int | None = None) -> None:
        self.dir = Path(home) / "run" / f"workers-{group}"
        self.group = group
        self.pid = pid or os.getpid()
        self._sig: tuple[int, int] | None = None

    @property
    def path(self) -> Path:
        return self.dir / "endpoints.json"

    def read(self) -> tuple[int, dict[str, str] | None]:
        """(generation, {name: ref}) as published; (0, None) before the first change."""
        try:
            doc = json.loads(self.path.read_text())
            return int(doc["generation"]), dict(doc["endpoints"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0, None

    def changed(self) -> bool:
        """Whether the file changed since the last call (one ``stat``)."""
        sig = file_signature(self.path)
        if sig == self._sig:
            return False
        self._sig = sig
        return True

    def publish(self, op: str, current: dict[str, str], name: str | None = None, ref: str | None = None) -> int:
        """Apply ``op`` ("load" name ref, "unload" name, "touch") to the published set (or to
        ``current``, this worker's set, before the first change); the new generation."""
        import fcntl

        from loopml.fileio import atomic_write_json

        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            generation, endpoints = self.read()
            endpoints = dict(current) if endpoints is None else endpoints
            if op == "load":
                endpoints[name] = ref
            elif op == "unload":
                endpoints.pop(name, None)
            atomic_write_json(self.path, {"generation": generation + 1, "endpoints": endpoints})
        return generation + 1

    def ack(self, generation: int) -> None:
        """Say this worker applied ``generation`` (-1: started, applying what is published)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{self.pid}.ack.tmp"
        tmp.write_text(str(generation))
        os.replace(tmp, self.dir / f"{self.pid}.ack")

    def acks(self) -> dict[int, int]:
        """{pid: generation acknowledged} of every live worker of the group; a dead one's file goes."""
        out = {}
        for f in self.dir.glob("*.ack"):
            try:
                pid, gen = int(f.stem), int(f.read_text() or -1)
            except (OSError, ValueError):
                continue
            if _alive(pid):
                out[pid] = gen
            else:
                f.unlink(missing_ok=True)
        return out

    def pending(self, generation: int) -> tuple[int, int]:
        """(workers that applied ``generation`` or later, live workers)."""
        acks = self.acks()
        return sum(1 for g in acks.values() if g >= generation), len(acks)
