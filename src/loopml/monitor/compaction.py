"""Compaction and retention of one model's prediction log.

:func:`compact_log` folds the fresh parts (one per writer flush) into UTC hour folders
(``date=YYYY-MM-DD/hour=HH/c-*.parquet``), merges the files of each closed hour into one,
then applies retention by age and by total size. It runs under an exclusive
``fcntl.flock`` on ``<model>/.compact.lock`` taken without waiting: with several server
workers each running its own compaction thread, one compacts and the others skip the
round. The kernel drops the lock of a process that dies, so a SIGKILLed compactor never
leaves it held.

Each replacement of input files by output files is crash-safe and invisible to readers:

1. outputs are written under hidden temp names and fsynced;
2. the journal (``_compaction.json``) is replaced, atomically, by ``running`` with the
   inputs and outputs and a new generation;
3. outputs are renamed to their final names;
4. inputs are deleted;
5. the journal says ``done``.

A reader (:func:`loopml.monitor.logfiles.snapshot`) facing a ``running`` journal uses the
outputs only when all of them exist, else the inputs only. The next compaction first
finishes (all outputs exist: delete the inputs) or undoes (else: delete the outputs) a
``running`` journal left by a crash, and removes stray temp files.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from loopml.monitor.logfiles import (COMPACTED_PREFIX, JOURNAL, LOCK, LogFile, file_name, fsync_dir, unfinished,
                                     hour_dir, hour_dirs, hour_start_ms, parse_name, read_journal)

HOUR_MS = 3_600_000
MAX_INPUTS = 2000  # files per replacement: bounds memory and the journal after a long outage
ROW_GROUP = 65_536  # rows per row group of a compacted file (parts hold a second's rows each)


class SimulatedCrash(RuntimeError):
    """Raised at a named step when a test asks compaction to stop there."""


@dataclass
class CompactionResult:
    parts_compacted: int = 0
    hours_merged: int = 0
    files_written: int = 0
    recovered: str | None = None  # "finished" / "undone" when a crashed compaction was found
    deleted_by_age: int = 0
    deleted_by_size: int = 0
    steps: list[str] = field(default_factory=list)


@contextmanager
def compaction_lock(folder: Path, *, wait: bool = False):
    """Yield True holding the model folder's compaction lock, or False when another holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def compact_log(root: str | Path, model: str, *, now: float | None = None, min_age_s: float = 0.0,
                closed_hour_grace_s: float = 600.0, retention_s: float | None = None,
                max_bytes: int | None = None, crash_at: str | None = None,
                wait: bool = False) -> CompactionResult | None:
    """One compaction round for ``root/model``; None when another compactor holds the lock.

    Parts whose newest row is at least ``min_age_s`` old are folded into hour folders; an
    hour that ended ``closed_hour_grace_s`` ago and holds several files is merged into one;
    hours older than ``retention_s``, then the oldest hours while the log exceeds
    ``max_bytes``, are deleted (never the newest hour). ``crash_at`` names a step at which
    to raise :class:`SimulatedCrash` (tests)."""
    folder = Path(root) / model
    now_ms = int((time.time() if now is None else now) * 1000)
    with compaction_lock(folder, wait=wait) as held:
        if not held:
            return None
        res = CompactionResult()
        res.recovered = recover(folder)
        fresh = [f for f in map(parse_name, _names(folder)) if f is not None
                 and (f.rows is None or f.max_ms <= now_ms - min_age_s * 1000)]
        fresh.sort(key=lambda f: f.max_ms)
        for i in range(0, len(fresh), MAX_INPUTS):
            batch = fresh[i:i + MAX_INPUTS]
            _replace(folder, batch, _by_hour(folder, batch), crash_at, res)
            res.parts_compacted += len(batch)
        for rel_dir in hour_dirs(folder):
            start = hour_start_ms(rel_dir)
            files = _compacted(folder, rel_dir)
            if start + HOUR_MS + closed_hour_grace_s * 1000 <= now_ms and len(files) > 1:
                _replace(folder, files, {rel_dir: [(folder / f.rel, None) for f in files]}, crash_at, res)
                res.hours_merged += 1
        _retention(folder, now_ms, retention_s, max_bytes, res)
        return res


def recover(folder: Path) -> str | None:
    """Finish or undo a replacement a crash left ``running``; remove stray compaction temps."""
    for rel_dir in hour_dirs(folder):
        for name in _names(folder / rel_dir):
            if name.startswith("." + COMPACTED_PREFIX) and name.endswith(".tmp"):
                (folder / rel_dir / name).unlink(missing_ok=True)
    journal = read_journal(folder)
    todo = unfinished(journal, lambda rel: (folder / rel).exists())
    if todo is None:
        return None
    victims, outcome = todo
    for rel in victims:
        (folder / rel).unlink(missing_ok=True)
    fsync_dir(folder)
    _write_journal(folder, {**journal, "state": "done"})
    return outcome


# -- one replacement ----------------------------------------------------------------------

def _by_hour(folder: Path, parts: list[LogFile]) -> dict[str, list]:
    """``hour folder -> [(source path, row mask or None)]``: which rows of which part go where."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    plan: dict[str, list] = defaultdict(list)
    for f in parts:
        path = folder / f.rel
        if f.rows is not None and hour_dir(f.min_ms) == hour_dir(f.max_ms):
            plan[hour_dir(f.min_ms)].append((path, None))  # the name says: one hour only
            continue
        ts = pq.read_table(path, columns=["ts"]).column("ts")
        hours = pc.fill_null(pc.divide(pc.cast(ts, "int64"), HOUR_MS * 1_000_000), 0)
        for h in pc.unique(hours).to_pylist():
            plan[hour_dir(h * HOUR_MS)].append((path, pc.equal(hours, h)))
    return plan


def _replace(folder: Path, inputs: list[LogFile], plan: dict[str, list], crash_at: str | None,
             res: CompactionResult) -> None:
    if not inputs:
        return
    temps = []
    for rel_dir, sources in sorted(plan.items()):
        temps.append(_write_merged(folder / rel_dir, sources))
    _step("after_temp", crash_at, res)
    outputs = [str(final.relative_to(folder)) for _, final in temps]
    gen = int((read_journal(folder) or {}).get("gen", 0)) + 1
    _write_journal(folder, {"gen": gen, "state": "running", "inputs": [f.rel for f in inputs],
                            "outputs": outputs})
    _step("after_journal", crash_at, res)
    for i, (tmp, final) in enumerate(temps):
        os.rename(tmp, final)
        fsync_dir(final.parent)
        if i == 0:
            _step("after_first_rename", crash_at, res)
    _step("after_renames", crash_at, res)
    for i, f in enumerate(inputs):
        (folder / f.rel).unlink(missing_ok=True)
        if i == 0:
            _step("after_first_delete", crash_at, res)
    for d in {(folder / f.rel).parent for f in inputs}:
        fsync_dir(d)
    _step("after_deletes", crash_at, res)
    _write_journal(folder, {"gen": gen, "state": "done", "inputs": [], "outputs": outputs})
    for f in inputs:
        _rmdir_empty(folder, (folder / f.rel).parent)
    res.files_written += len(temps)


def _write_merged(hour_folder: Path, sources: list) -> tuple[Path, Path]:
    """Stream the sources' rows into one fsynced temp file; ``(temp, final path)``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from loopml.monitor.logfiles import ts_range_ms

    schemas = [pq.read_schema(p) for p, _ in sources]
    schema = pa.unify_schemas(schemas, promote_options="permissive")
    hour_folder.mkdir(parents=True, exist_ok=True)
    tmp = hour_folder / f".{COMPACTED_PREFIX}{os.getpid()}-{time.time_ns()}.tmp"
    rows, lo, hi = 0, None, None
    buf: list = []
    with open(tmp, "wb") as fh:
        with pq.ParquetWriter(fh, schema) as writer:
            for path, mask in sources:
                table = pq.read_table(path)
                if mask is not None:
                    table = table.filter(mask)
                table = _conform(table, schema)
                a, b = ts_range_ms(table)
                lo, hi = (a, b) if lo is None else (min(lo, a), max(hi, b))
                rows += table.num_rows
                buf.append(table)
                if sum(t.num_rows for t in buf) >= ROW_GROUP:  # few large row groups: fast scans
                    writer.write_table(pa.concat_tables(buf).combine_chunks(), row_group_size=ROW_GROUP)
                    buf = []
            if buf:
                writer.write_table(pa.concat_tables(buf).combine_chunks(), row_group_size=ROW_GROUP)
        fh.flush()
        os.fsync(fh.fileno())
    return tmp, hour_folder / file_name(COMPACTED_PREFIX, lo or 0, hi or 0, rows)


def _conform(table, schema):
    import pyarrow as pa

    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names
            else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


# -- retention ------------------------------------------------------------------------------

def _retention(folder: Path, now_ms: int, retention_s: float | None, max_bytes: int | None,
               res: CompactionResult) -> None:
    hours = hour_dirs(folder)
    if retention_s is not None:
        cutoff = now_ms - int(retention_s * 1000)
        for rel_dir in list(hours[:-1]):
            if hour_start_ms(rel_dir) + HOUR_MS <= cutoff:
                res.deleted_by_age += _drop(folder, rel_dir)
                hours.remove(rel_dir)
    if max_bytes is not None:
        sizes = {d: sum(_size(folder / d / n) for n in _names(folder / d)) for d in hours}
        total = sum(sizes.values()) + sum(_size(folder / n) for n in _names(folder) if parse_name(n))
        for rel_dir in hours[:-1]:
            if total <= max_bytes:
                break
            total -= sizes[rel_dir]
            res.deleted_by_size += _drop(folder, rel_dir)


def _drop(folder: Path, rel_dir: str) -> int:
    n = len(_compacted(folder, rel_dir))
    shutil.rmtree(folder / rel_dir, ignore_errors=True)
    _rmdir_empty(folder, (folder / rel_dir).parent)
    return n


# -- small helpers ----------------------------------------------------------------------------

def _names(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _compacted(folder: Path, rel_dir: str) -> list[LogFile]:
    files = [parse_name(f"{rel_dir}/{n}") for n in _names(folder / rel_dir) if n.startswith(COMPACTED_PREFIX)]
    return sorted((f for f in files if f is not None), key=lambda f: f.min_ms)


def _rmdir_empty(folder: Path, d: Path) -> None:
    while d != folder and folder in d.parents:
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent


def _write_journal(folder: Path, data: dict) -> None:
    tmp = folder / f".{JOURNAL}.tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, folder / JOURNAL)
    fsync_dir(folder)


def _step(name: str, crash_at: str | None, res: CompactionResult) -> None:
    res.steps.append(name)
    if crash_at == name:
        raise SimulatedCrash(name)
