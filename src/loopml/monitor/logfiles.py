"""Where the prediction log's files live, what their names say, and which ones a reader uses.

Layout of one model's log folder ``<root>/<model>/``::

    part-<min_ms>-<max_ms>-<rows>-<id>.parquet         fresh parts, one per writer flush
    date=YYYY-MM-DD/hour=HH/c-<min_ms>-<max_ms>-<rows>-<id>.parquet   compacted, UTC hours
    _compaction.json                                    the compactor's journal
    .compact.lock                                       flock: one compactor at a time

Every name carries the rows' timestamp range (epoch ms, floor/ceil) and row count, so a
window read picks its files from directory names alone: the hour folders of the window,
then the files whose range overlaps it, without opening any other file. Parts written
before this layout (``part-<ms>-<id>.parquet``) say nothing of their rows; they are read
by every query.

A compaction replaces input files by output files. Its journal says which, and whether
the swap is under way (``running``) or over (``done``), with a generation number. While it
runs, a reader uses the outputs only when every one of them exists, else the inputs only,
so no row is ever read twice or missed; :func:`snapshot` re-lists when the journal changed
while it listed (see :mod:`loopml.monitor.compaction` for the writer's side).

The same names and journal are used for each replica's published log on object storage:
:func:`snapshot` takes a :class:`loopml.monitor.remotelog.RemoteFolder` as well as a path.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

JOURNAL = "_compaction.json"
LOCK = ".compact.lock"
PART_PREFIX = "part-"
COMPACTED_PREFIX = "c-"
SUFFIX = ".parquet"
_FAR = 10**15  # ms: "any time" for parts whose names do not say


@dataclass(frozen=True)
class LogFile:
    """One Parquet file of the log: ``rel`` path under the model folder and what its name says."""

    rel: str
    min_ms: int
    max_ms: int
    rows: int | None  # None: a legacy part, count unknown

    def overlaps(self, since_ms: int | None, until_ms: int | None) -> bool:
        if since_ms is not None and self.max_ms < since_ms:
            return False
        return until_ms is None or self.min_ms < until_ms


def file_name(prefix: str, min_ms: int, max_ms: int, rows: int) -> str:
    return f"{prefix}{max(0, min_ms):013d}-{max(0, max_ms):013d}-{rows}-{uuid.uuid4().hex[:12]}{SUFFIX}"


def parse_name(rel: str) -> LogFile | None:
    """The :class:`LogFile` a part or compacted file name describes; None for anything else."""
    base = rel.rsplit("/", 1)[-1]
    if not base.endswith(SUFFIX):
        return None
    if base.startswith(PART_PREFIX):
        fields = base[len(PART_PREFIX):-len(SUFFIX)].split("-")
    elif base.startswith(COMPACTED_PREFIX):
        fields = base[len(COMPACTED_PREFIX):-len(SUFFIX)].split("-")
    else:
        return None
    try:
        if len(fields) == 4:
            return LogFile(rel, int(fields[0]), int(fields[1]), int(fields[2]))
        if len(fields) == 2 and base.startswith(PART_PREFIX):  # legacy part-<write ms>-<id>
            return LogFile(rel, 0, _FAR, None)
    except ValueError:
        return None
    return None


def ts_range_ms(table) -> tuple[int, int]:
    """``(floor min, ceil max)`` of a table's ``ts`` in epoch ms; ``(0, 0)`` when it has none."""
    import pyarrow.compute as pc

    if "ts" not in table.column_names or table.num_rows == 0:
        return 0, 0
    ns = pc.cast(table.column("ts"), "int64") if str(table.schema.field("ts").type).startswith("timestamp") \
        else pc.multiply(pc.cast(table.column("ts"), "float64"), 1e9)
    mm = pc.min_max(ns).as_py()
    if mm["min"] is None:
        return 0, 0
    return int(math.floor(mm["min"] / 1e6)), int(math.ceil(mm["max"] / 1e6))


def hour_dir(ms: int) -> str:
    """``date=YYYY-MM-DD/hour=HH`` of a time in epoch ms (UTC)."""
    t = datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc)
    return f"date={t:%Y-%m-%d}/hour={t:%H}"


def hour_start_ms(rel_dir: str) -> int | None:
    """Epoch ms where the hour folder ``date=YYYY-MM-DD/hour=HH`` begins; None if not one."""
    try:
        d, h = rel_dir.split("/")
        t = datetime.strptime(f"{d[5:]} {h[5:]}", "%Y-%m-%d %H").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return int(t.timestamp() * 1000)


def _names(folder: Path) -> list[str]:
    if hasattr(folder, "names"):  # a replica's folder on object storage (monitor.remotelog)
        return folder.names()
    try:
        return [e.name for e in os.scandir(folder)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def hour_dirs(folder: Path, since_ms: int | None = None, until_ms: int | None = None) -> list[str]:
    """Hour folders overlapping ``[since_ms, until_ms)``, oldest first, pruned by name: one
    listing of the date folders, then one of each date folder in range."""
    lo_day = hour_dir(since_ms)[:15] if since_ms is not None else None
    hi_day = hour_dir(until_ms)[:15] if until_ms is not None else None
    out = []
    for day in sorted(n for n in _names(folder) if n.startswith("date=")):
        if (lo_day and day < lo_day) or (hi_day and day > hi_day):
            continue
        for hour in sorted(n for n in _names(folder / day) if n.startswith("hour=")):
            rel = f"{day}/{hour}"
            start = hour_start_ms(rel)
            if start is None:
                continue
            if since_ms is not None and start + 3_600_000 <= since_ms:
                continue
            if until_ms is not None and start >= until_ms:
                continue
            out.append(rel)
    return out


def list_files(folder: Path, since_ms: int | None = None, until_ms: int | None = None) -> list[LogFile]:
    """Fresh parts and compacted files whose names overlap the window (no journal applied)."""
    files = [f for f in map(parse_name, _names(folder)) if f is not None and f.overlaps(since_ms, until_ms)]
    for rel_dir in hour_dirs(folder, since_ms, until_ms):
        for name in _names(folder / rel_dir):
            if name.startswith(COMPACTED_PREFIX):
                f = parse_name(f"{rel_dir}/{name}")
                if f is not None and f.overlaps(since_ms, until_ms):
                    files.append(f)
    return files


def read_journal(folder: Path) -> dict | None:
    try:
        return json.loads((folder / JOURNAL).read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # written by rename, so never torn; unreadable means foreign: ignore it
        return None


def _key(journal: dict | None) -> tuple:
    return (None, None) if journal is None else (journal.get("gen"), journal.get("state"))


class Unsettled(RuntimeError):
    """The log changed under a reader more times than it retries; retry later."""


def snapshot(folder: Path, since_ms: int | None = None, until_ms: int | None = None, *,
             retries: int = 50) -> list[LogFile]:
    """The files a reader uses for the window: each row in exactly one of them.

    Journal, listing, journal again: when the two journal reads differ a compaction step
    happened meanwhile, so list again. When a compaction is ``running`` its outputs replace
    its inputs only if every output exists (inputs are deleted only after that)."""
    for _ in range(retries):
        before = read_journal(folder)
        files = list_files(folder, since_ms, until_ms)
        after = read_journal(folder)
        if _key(before) != _key(after):
            time.sleep(0.001)
            continue
        if after is None or after.get("state") != "running":
            return files
        outputs = list(after.get("outputs") or [])
        published = all((folder / rel).exists() for rel in outputs)
        drop = set(after.get("inputs") or []) if published else set(outputs)
        keep = [f for f in files if f.rel not in drop]
        if published:  # a listing may have missed an output renamed while it ran
            seen = {f.rel for f in keep}
            keep += [f for f in map(parse_name, outputs) if f is not None and f.rel not in seen
                     and f.overlaps(since_ms, until_ms)]
        return keep
    raise Unsettled(f"{folder}: the prediction log kept changing while it was listed; retry")


def newest_first_cover(files: list[LogFile], last: int) -> int | None:
    """A ``since`` (ms) that keeps the newest ``last`` rows: newest files first until they hold
    ``last`` rows; any row newer than the oldest of them may be among the newest, so the bound
    is that file's lowest time. None when the files cannot say (legacy parts, too few rows)."""
    total = 0
    lowest = None
    for f in sorted(files, key=lambda f: f.max_ms, reverse=True):
        if f.rows is None:
            return None
        total += f.rows
        lowest = f.min_ms if lowest is None else min(lowest, f.min_ms)
        if total >= last:
            return lowest
    return None


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(folder: Path, name: str, table) -> Path:
    """Write a table as ``folder/name``: hidden temp name, fsync, rename, fsync the folder."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    with open(tmp, "wb") as fh:
        pq.write_table(table, fh)
        fh.flush()
        os.fsync(fh.fileno())
    final = folder / name
    os.rename(tmp, final)
    fsync_dir(folder)
    return final


def unfinished(journal: dict | None, exists) -> tuple[list[str], str] | None:
    """For a replacement a crash left ``running``: (the files to delete, "finished" or "undone").
    All outputs written: the inputs go (finish); else the outputs go (undo). None when nothing
    was left running. ``exists(rel)`` says whether a file is there (local or object storage)."""
    if journal is None or journal.get("state") != "running":
        return None
    outputs = journal.get("outputs") or []
    if all(exists(rel) for rel in outputs):
        return journal.get("inputs") or [], "finished"
    return outputs, "undone"
