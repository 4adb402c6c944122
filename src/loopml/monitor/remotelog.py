"""The prediction log on object storage (``LOOPML_HOME=s3://...``, issue #11).

Each server replica keeps writing its parts locally (:mod:`loopml.monitor.predlog`: temp,
fsync, rename), so answering never waits on the network. That local folder is an *outbox*
(:mod:`loopml.monitor.outbox`) whose sealed parts are published, one PUT each, to::

    <home>/predictions/<model>/<replica>/part-<min_ms>-<max_ms>-<rows>-<id>.parquet

Each replica compacts only its own prefix (:func:`compact_replica`), with the local
compactor's journal protocol (see :mod:`loopml.monitor.compaction`): journal ``running``
with inputs and outputs, PUT the outputs, delete the inputs, journal ``done``. Readers
(:func:`read_remote`, :func:`remote_files`) apply :func:`loopml.monitor.logfiles.snapshot`
to each replica's folder, so a row is never read twice or missed, also across a crash
mid-compaction; a replica restarted under the same ``LOOPML_REPLICA_ID`` first finishes or
undoes what its predecessor left ``running``.

Readers list ``<model>/`` (the replicas), then per replica the fresh parts and only the hour
folders of the window, download the overlapping files into a local cache (their names are
unique and never rewritten, so a cached copy never goes stale) and hand them to DuckDB.

Lag between an answer and its visibility to the monitor: up to the writer's flush interval
(1 s) plus the publish interval (``LOOPML_PREDICTION_LOG_PUBLISH_INTERVAL_S``, 2 s) plus one
upload.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

from loopml.monitor.logfiles import (COMPACTED_PREFIX, JOURNAL, PART_PREFIX, LogFile, hour_dirs, hour_start_ms,
                                     newest_first_cover, parse_name, read_journal, snapshot, unfinished)

HOUR_MS = 3_600_000


def replica_id() -> str:
    """This process's replica: ``$LOOPML_REPLICA_ID``, else ``<hostname>-<pid>``."""
    raw = os.environ.get("LOOPML_REPLICA_ID") or f"{socket.gethostname()}-{os.getpid()}"
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)[:100] or "replica"


def _fs(url: str):
    """A file system that never answers a listing from its cache: readers must see new parts."""
    from fsspec.core import url_to_fs

    from loopml.platform.objstore import storage_options

    opts = dict(storage_options(url))
    if url.startswith(("s3://", "s3a://")):
        opts.update(use_listings_cache=False, skip_instance_cache=True)
    fs, root = url_to_fs(url, **opts)
    return fs, root.rstrip("/")


class RemoteFolder:
    """The part of :class:`pathlib.Path` that :func:`loopml.monitor.logfiles.snapshot` uses, on an
    fsspec folder: ``/``, :meth:`exists`, :meth:`read_text` and :meth:`names`."""

    def __init__(self, fs, path: str) -> None:
        self.fs = fs
        self.path = path.rstrip("/")

    def __truediv__(self, rel: str) -> "RemoteFolder":
        return RemoteFolder(self.fs, f"{self.path}/{rel}")

    def __str__(self) -> str:
        return self.path

    def names(self) -> list[str]:
        try:
            return [e.rstrip("/").rsplit("/", 1)[-1] for e in self.fs.ls(self.path, detail=False)]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def read_text(self) -> str:
        return self.fs.cat_file(self.path).decode()

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.path)

    def put(self, data: bytes) -> None:
        """One object, whole or not at all (a single PUT; temp + rename on a local folder)."""
        if _is_local(self.fs):
            parent = Path(self.path).parent
            parent.mkdir(parents=True, exist_ok=True)
            tmp = parent / f".{Path(self.path).name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, self.path)
        else:
            self.fs.pipe_file(self.path, data)

    def rm(self) -> None:
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            pass


def _is_local(fs) -> bool:
    proto = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in proto or "local" in proto


def model_folder(url: str, model: str) -> RemoteFolder:
    fs, root = _fs(url)
    return RemoteFolder(fs, f"{root}/{model}")


# -- compaction of one replica's prefix -----------------------------------------------------

def recover(folder: RemoteFolder) -> str | None:
    """Finish (all outputs exist) or undo (else) a replacement a crash left ``running``."""
    journal = read_journal(folder)
    todo = unfinished(journal, lambda rel: (folder / rel).exists())
    if todo is None:
        return None
    victims, outcome = todo
    for rel in victims:
        (folder / rel).rm()
    (folder / JOURNAL).put(json.dumps({**journal, "state": "done"}).encode())
    return outcome


def compact_replica(folder: RemoteFolder, *, now: float | None = None, min_age_s: float = 0.0,
                    closed_hour_grace_s: float = 600.0, crash_at: str | None = None) -> dict:
    """Fold one replica's fresh parts into hour files and merge each closed hour into one.
    Only the replica that owns ``folder`` may call this (one writer per prefix)."""
    from loopml.monitor.compaction import _by_hour  # the local compactor's planning, on copies

    now_ms = int((time.time() if now is None else now) * 1000)
    res = {"recovered": recover(folder), "parts_compacted": 0, "hours_merged": 0}
    fresh = [f for f in map(parse_name, folder.names()) if f is not None and f.rel.startswith(PART_PREFIX)
             and f.max_ms <= now_ms - min_age_s * 1000]
    with tempfile.TemporaryDirectory(prefix="loopml-compact-") as scratch:
        work = Path(scratch)
        if fresh:
            _fetch(folder, fresh, work)
            _replace(folder, fresh, _by_hour(work, fresh), work, crash_at)
            res["parts_compacted"] = len(fresh)
        for rel_dir in hour_dirs(folder):
            files = [f for f in map(parse_name, (f"{rel_dir}/{n}" for n in (folder / rel_dir).names()))
                     if f is not None and f.rel.rsplit("/", 1)[-1].startswith(COMPACTED_PREFIX)]
            if hour_start_ms(rel_dir) + HOUR_MS + closed_hour_grace_s * 1000 <= now_ms and len(files) > 1:
                _fetch(folder, files, work)
                _replace(folder, files, {rel_dir: [(work / f.rel, None) for f in files]}, work, crash_at)
                res["hours_merged"] += 1
    return res


def _fetch(folder: RemoteFolder, files: list[LogFile], work: Path) -> None:
    for f in files:
        dest = work / f.rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((folder / f.rel).read_bytes())


def _replace(folder: RemoteFolder, inputs: list[LogFile], plan: dict, work: Path, crash_at: str | None) -> None:
    from loopml.monitor.compaction import SimulatedCrash, _write_merged

    outs = [_write_merged(work / "out" / rel_dir, sources) for rel_dir, sources in sorted(plan.items())]
    outputs = [f"{rel_dir}/{final.name}" for (rel_dir, _), (_, final) in zip(sorted(plan.items()), outs)]
    gen = int((read_journal(folder) or {}).get("gen", 0)) + 1
    journal = {"gen": gen, "state": "running", "inputs": [f.rel for f in inputs], "outputs": outputs}
    (folder / JOURNAL).put(json.dumps(journal).encode())
    for i, ((tmp, _), rel) in enumerate(zip(outs, outputs)):
        if crash_at == "after_first_put" and i == 1:
            raise SimulatedCrash(crash_at)
        (folder / rel).put(Path(tmp).read_bytes())
    if crash_at == "after_puts":
        raise SimulatedCrash(crash_at)
    for i, f in enumerate(inputs):
        if crash_at == "after_first_delete" and i == 1:
            raise SimulatedCrash(crash_at)
        (folder / f.rel).rm()
    (folder / JOURNAL).put(json.dumps({**journal, "state": "done", "inputs": []}).encode())


# -- reading: every replica's published parts -------------------------------------------------

def _ms(t: float | None, up: bool = False) -> int | None:
    import math

    if t is None:
        return None
    return int(math.ceil(t * 1000)) if up else int(math.floor(t * 1000))


def _window_files(url: str, model: str, since_ms: int | None, until_ms: int | None):
    """``[(replica folder, LogFile)]`` of every replica, each row in exactly one file."""
    base = model_folder(url, model)
    out = []
    for replica in sorted(base.names()):
        if replica.startswith((".", "_")):
            continue
        folder = base / replica
        out += [(folder, replica, f) for f in snapshot(folder, since_ms, until_ms)]
    return out


CACHE_MAX_AGE_S = 86_400.0  # a cached file no read has used for a day is deleted
_PRUNE_EVERY_S = 600.0
_last_prune: dict[str, float] = {}


def _cached(cache: Path, model: str, entries) -> list[str]:
    """Local copies of the files (downloaded once: names are unique, contents never change).
    A hit is touched, so :func:`prune_cache` keeps what reads still use."""
    paths = []
    for folder, replica, f in entries:
        dest = cache / model / replica / f.rel
        try:
            os.utime(dest)
        except FileNotFoundError:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
            tmp.write_bytes((folder / f.rel).read_bytes())
            os.replace(tmp, dest)
        paths.append(str(dest))
    _maybe_prune(cache)
    return paths


def prune_cache(cache: Path, max_age_s: float = CACHE_MAX_AGE_S, now: float | None = None) -> int:
    """Delete cached files unused for ``max_age_s`` (parts compacted away, hours read no more);
    returns how many. A file still needed is simply downloaded again."""
    cutoff = (time.time() if now is None else now) - max_age_s
    removed = 0
    for p in cache.rglob("*.parquet"):
        try:
            if p.stat().st_mtime < cutoff:
                p.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    return removed


def _maybe_prune(cache: Path) -> None:
    now = time.monotonic()
    if now - _last_prune.get(str(cache), -_PRUNE_EVERY_S) >= _PRUNE_EVERY_S:
        _last_prune[str(cache)] = now
        prune_cache(cache)


def cache_dir(root: Path) -> Path:
    """Read cache of a remote log: beside the local outbox, in the workspace's ``cache``."""
    return Path(root).parent / "cache" / "predictions"


def remote_files(root, model: str, *, since: float | None = None, until: float | None = None,
                 retries: int = 20) -> list[str]:
    """Local copies of the published files holding ``model``'s rows in ``[since, until)``."""
    for attempt in range(retries):
        entries = _window_files(root.remote_url, model, _ms(since), _ms(until, up=True))
        entries.sort(key=lambda e: (e[2].min_ms, e[1], e[2].rel))
        try:
            return _cached(cache_dir(root), model, entries)
        except FileNotFoundError:  # compacted away after we listed it: list again
            if attempt == retries - 1:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


def read_remote(root, model: str, *, since: float | None = None, until: float | None = None,
                limit: int | None = None, last: int | None = None, retries: int = 20):
    """:func:`loopml.monitor.logread.read_predictions` over every replica's published parts."""
    import pandas as pd

    from loopml.monitor.logread import _query
    from loopml.monitor.predlog import META_COLUMNS

    for attempt in range(retries):
        entries = _window_files(root.remote_url, model, _ms(since), _ms(until, up=True))
        bound = since
        if last is not None and entries:
            cover = newest_first_cover([e[2] for e in entries], int(last))
            if cover is not None and (since is None or cover / 1000.0 > since):
                bound = cover / 1000.0
                entries = [e for e in entries if e[2].max_ms >= cover]
        if not entries:
            return pd.DataFrame(columns=list(META_COLUMNS))
        try:
            paths = _cached(cache_dir(root), model, entries)
        except FileNotFoundError:
            if attempt == retries - 1:
                raise
            time.sleep(0.05)
            continue
        return _query(paths, bound, until, limit, last)
    raise AssertionError("unreachable")


def drop_cache(root) -> None:
    shutil.rmtree(cache_dir(root), ignore_errors=True)
