"""The prediction log: append-only Parquet part files, written off the hot path.

Layout: ``<root>/<model>/part-<min_ms>-<max_ms>-<rows>-<id>.parquet`` (see
:mod:`loopml.monitor.logfiles`; compaction folds parts into hour folders). One row per
prediction with columns ``request_id, ts (UTC timestamp), model, version, variant``, then
one ``in.<feature>`` column per input and one ``out.<name>`` column per output. Each part
file is written to a temporary name, fsynced, and renamed, so a reader never sees a
half-written file and nothing acknowledged by :meth:`PredictionLogWriter.close` is lost.

Two durability modes. Buffered (the default, ``async`` in the spec): rows wait in memory up
to ``flush_interval_s``, so a crash loses what :attr:`PredictionLogWriter.pending` counted.
``acknowledged``: every append wakes the writer, which writes everything queued as one part
and fsyncs it (a group commit: the appends that arrived during the previous commit share the
next one); :attr:`PredictionLogWriter.durable_seq` says how far that got, so the server can
answer a request only once its rows are on disk.

The server appends columns (:meth:`PredictionLogWriter.append_columns`): the arrays it
already has are kept by reference and only concatenated, once per column, when the
writer thread flushes, so logging costs a few microseconds per batch, not per row.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any, Callable

from loopml.monitor.logfiles import PART_PREFIX, file_name, ts_range_ms, write_atomic
from loopml.monitor.logread import log_files, read_predictions  # noqa: F401 - the public read API

IN_PREFIX = "in."
OUT_PREFIX = "out."
META_COLUMNS = ("request_id", "ts", "model", "version", "variant")


def flatten_record(rec: dict[str, Any]) -> dict[str, Any]:
    row = {k: rec.get(k) for k in META_COLUMNS}
    for k, v in (rec.get("inputs") or {}).items():
        row[IN_PREFIX + k] = v
    for k, v in (rec.get("outputs") or {}).items():
        row[OUT_PREFIX + k] = v
    return row


def records_to_columns(records: list[dict[str, Any]]) -> tuple[dict, dict, dict, int]:
    """``(meta, inputs, outputs, n)`` of row records, the arguments of ``append_columns``."""
    n = len(records)
    meta = {k: [r.get(k) for r in records] for k in META_COLUMNS}
    names_in: dict[str, None] = {}
    names_out: dict[str, None] = {}
    for r in records:
        names_in.update(dict.fromkeys(r.get("inputs") or ()))
        names_out.update(dict.fromkeys(r.get("outputs") or ()))
    inputs = {k: [(r.get("inputs") or {}).get(k) for r in records] for k in names_in}
    outputs = {k: [(r.get("outputs") or {}).get(k) for r in records] for k in names_out}
    return meta, inputs, outputs, n


def write_part(folder: Path, rows: list[dict[str, Any]]) -> Path:
    """Write row records as one Parquet part file, atomically (temp + fsync + rename)."""
    return write_table_part(folder, build_table([_chunk(*records_to_columns(rows))]))


def write_table_part(folder: Path, table) -> Path:
    """Write a PyArrow table as one part file (temp name, fsync, rename, fsync the folder), named
    after its rows' time range and count so that window reads prune by name."""
    return write_atomic(folder, file_name(PART_PREFIX, *ts_range_ms(table), table.num_rows), table)


# -- columnar chunks ------------------------------------------------------------------------------
# A chunk is what one append_columns call gave: (meta, inputs, outputs, n), each value a scalar
# (the same for all n rows), a list or a 1-d array, kept by reference. A flush groups chunks
# of the same columns and concatenates each column once (NumPy for arrays, one list for the
# rest) before handing it to PyArrow, so its cost grows with columns, not with rows.

Chunk = tuple[dict[str, Any], dict[str, Any], dict[str, Any], int]
_STRING_META = ("request_id", "model", "version", "variant")


def _is_vector(v: Any) -> bool:
    return isinstance(v, (list, tuple)) or getattr(v, "ndim", 0) > 0


def _column(parts: tuple, counts: list[int], total: int, kind: str | None = None):
    """One PyArrow array holding every part (scalar, list or 1-d array) back to back.

    ``kind`` is ``"string"`` or ``"ts"`` (epoch seconds) for the meta columns."""
    import numpy as np
    import pyarrow as pa

    t0 = type(parts[0])
    same = all(type(p) is t0 for p in parts)
    values: Any = None
    if same and t0 is np.ndarray:
        try:
            values = parts[0] if len(parts) == 1 else np.concatenate(parts)
        except ValueError:  # mixed dimensions: the general path says what is wrong
            values = None
        if values is not None and values.ndim != 1:
            values = None
    if values is not None:
        pass
    elif same and t0 is list:
        values = parts[0] if len(parts) == 1 else list(chain.from_iterable(parts))
    elif same and not _is_vector(parts[0]):  # one scalar per chunk
        if len(parts) == 1 or len(set(parts)) == 1:
            v = parts[0].item() if hasattr(parts[0], "item") else parts[0]
            if kind == "ts" and v is not None:
                return _ts_array(np.full(total, v, dtype=np.float64))
            if kind == "string" and v is not None:
                v = str(v)
            return pa.nulls(total, pa.string() if kind == "string" else pa.null()) if v is None else pa.repeat(v, total)
        values = list(parts) if total == len(parts) else np.repeat(np.array(parts, dtype=object), counts).tolist()
    else:
        values = []
        for p, n in zip(parts, counts):
            if not _is_vector(p):
                values.extend([p.item() if hasattr(p, "item") else p] * n)
            else:
                values.extend(p.tolist() if isinstance(p, np.ndarray) else p)
    if kind == "ts":
        if isinstance(values, list):
            values = [np.nan if v is None else v for v in values]
        return _ts_array(values)
    if kind == "string":
        if isinstance(values, np.ndarray):
            values = values.tolist()
        if not all(type(v) is str for v in values):
            values = [None if v is None else str(v) for v in values]
        return pa.array(values, type=pa.string())
    return pa.array(values, from_pandas=True)  # NaN -> null, as the pandas-built log had


def _ts_array(values):
    import numpy as np
    import pyarrow as pa

    arr = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(arr)
    ns = (np.where(finite, arr, 0.0) * 1e9).astype(np.int64)
    return pa.array(ns, type=pa.timestamp("ns", tz="UTC"), mask=None if finite.all() else ~finite)


def _block(parts: list, counts: list[int], total: int, names: tuple) -> list:
    """Columns of ``(names, matrix)`` input blocks: one concatenation, then column views."""
    import numpy as np

    X = parts[0][1] if len(parts) == 1 else np.concatenate([p[1] for p in parts])
    return [_column((X[:, j],), [total], total) for j in range(len(names))]


def _group_table(group: list[Chunk]):
    import pyarrow as pa

    counts = [c[3] for c in group]
    total = sum(counts)
    names, arrays = [], []
    for pos, prefix in ((0, ""), (1, IN_PREFIX), (2, OUT_PREFIX)):
        first = group[0][pos]
        if isinstance(first, tuple):  # an input block: (names, (n, k) matrix)
            names.extend(prefix + k for k in first[0])
            arrays.extend(_block([c[pos] for c in group], counts, total, first[0]))
            continue
        keys = tuple(first)
        if not keys:
            continue
        get = itemgetter(*keys)
        rows = [get(c[pos]) for c in group]
        columns = zip(*rows) if len(keys) > 1 else ([r for r in rows],)
        for key, parts in zip(keys, columns):
            kind = ("ts" if key == "ts" else "string" if key in _STRING_META else None) if pos == 0 else None
            names.append(prefix + key)
            arrays.append(_column(tuple(parts), counts, total, kind))
    return pa.Table.from_arrays(arrays, names=names)


def build_table(chunks: list[Chunk]):
    """One PyArrow table of the chunks, columns ``META_COLUMNS`` then ``in.*`` then ``out.*``."""
    import pyarrow as pa

    groups: dict[tuple, list[Chunk]] = {}
    for c in chunks:
        ins = c[1]
        key = ("block", ins[0], ins[1].dtype.str) if isinstance(ins, tuple) else tuple(ins)
        groups.setdefault((key, tuple(c[2])), []).append(c)
    tables = [_group_table(g) for g in groups.values()]
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
    rest = table.column_names[len(META_COLUMNS):]
    names = (list(META_COLUMNS) + [n for n in rest if n.startswith(IN_PREFIX)]
             + [n for n in rest if not n.startswith(IN_PREFIX)])
    return table.select(names)


def _chunk(meta: dict[str, Any], inputs: dict[str, Any], outputs: dict[str, Any], n: int) -> Chunk:
    return {k: meta.get(k) for k in META_COLUMNS}, inputs, outputs, n


class PredictionLogWriter:
    """Buffers predictions in memory (bounded) and writes Parquet parts from its own thread.

    Two ways in, both non-blocking: :meth:`append_columns` (columnar, what the server uses)
    and :meth:`append` (row records). Neither converts anything: the caller's arrays are
    kept as they are until the writer thread flushes, every ``flush_interval_s`` or once
    ``flush_rows`` rows wait, or at once with ``acknowledged``. When ``max_queue_rows`` rows
    already wait, the new rows are counted in ``dropped`` and the call returns False.

    Every append call takes the next sequence number (:attr:`seq`); after each flush
    :attr:`durable_seq` is the last one it covered and ``on_commit(durable_seq)`` is called
    from the writer thread. Appends that were refused or whose flush failed are remembered
    as failed ranges (:meth:`failed_between`), so a waiter can tell its rows were lost.
    """

    def __init__(self, root: str | Path, model: str, *, flush_rows: int = 1000,
                 flush_interval_s: float = 1.0, max_queue_rows: int = 200_000,
                 acknowledged: bool = False, on_commit: Callable[[int], None] | None = None) -> None:
        self.root = Path(root)
        self.model = model
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.max_queue_rows = max_queue_rows
        self.acknowledged = acknowledged
        self.on_commit = on_commit
        self.dropped = 0
        self.written = 0
        self.failed = 0
        self.commits = 0
        self.last_write_ts: float | None = None
        self.seq = 0  # append calls so far (accepted or refused)
        self.durable_seq = 0  # every append up to here is on disk, or in a failed range
        self._failed: deque[tuple[int, int]] = deque(maxlen=10_000)  # (lo, hi]: appends lost
        self._buf: list[Chunk] = []
        self._queued_rows = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    @property
    def folder(self) -> Path:
        return self.root / self.model

    @property
    def pending(self) -> int:
        """Rows accepted but not yet durable: what a crash now would lose."""
        return self._queued_rows

    def start(self) -> "PredictionLogWriter":
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, name=f"predlog-{self.model}", daemon=True)
            self._thread.start()
        return self

    def append_columns(self, meta: dict[str, Any], inputs: dict[str, Any], outputs: dict[str, Any],
                       n: int) -> bool:
        """Queue ``n`` predictions given by column; never blocks, never converts.

        ``meta`` holds ``request_id, ts, model, version, variant`` (``ts`` in epoch
        seconds), each a scalar (the same for all ``n`` rows) or ``n`` values; ``inputs``
        and ``outputs`` map names (without the ``in.``/``out.`` prefix) to ``n`` values, a
        list or a 1-d NumPy array. ``inputs`` may also be a block ``(names, X)`` with ``X``
        an ``(n, len(names))`` array: one reference instead of one per column, which is
        what keeps many small batches cheap. Arrays are kept by reference: do not mutate
        them afterwards.
        """
        if n <= 0:
            return True
        if isinstance(inputs, tuple):
            names, X = inputs
            if getattr(X, "ndim", 0) != 2 or X.shape != (n, len(names)):
                raise ValueError(f"an input block must be an (n, k) array with n={n}, k={len(names)}")
        chunk = _chunk(meta, inputs, outputs, n)
        with self._lock:
            self.seq += 1
            if self._queued_rows + n > self.max_queue_rows:
                self.dropped += n
                self._failed.append((self.seq - 1, self.seq))
                return False
            self._queued_rows += n
            self._buf.append(chunk)
            wake = self.acknowledged or self._queued_rows >= self.flush_rows
        if wake:
            self._wake.set()
        return True

    def append(self, records: list[dict[str, Any]]) -> bool:
        """Queue row records (``request_id, ts, model, version, variant, inputs, outputs``)."""
        if not records:
            return True
        return self.append_columns(*records_to_columns(records))

    def lost(self) -> None:
        """Count an append that failed before it reached the queue, as a refused one."""
        with self._lock:
            self.seq += 1
            self._failed.append((self.seq - 1, self.seq))

    def failed_between(self, lo: int, hi: int) -> bool:
        """True when an append numbered in ``(lo, hi]`` was refused or its flush failed."""
        return any(a < hi and b > lo for a, b in list(self._failed))

    def close(self) -> None:
        """Write everything queued (fsynced), then stop the thread."""
        if self._thread is None:
            return
        self._stop = True
        self._wake.set()
        self._thread.join()
        self._thread = None

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            stop = self._stop
            self._flush_queued()
            if stop:
                self._flush_queued()
                return

    def _flush_queued(self) -> None:
        with self._lock:
            buf, self._buf = self._buf, []
            upto = self.seq
        lo = self.durable_seq
        if buf:
            n = sum(c[3] for c in buf)
            try:
                write_table_part(self.folder, build_table(buf))
                self.written += n
                self.commits += 1
                self.last_write_ts = time.time()
            except Exception:  # noqa: BLE001 - a failed write must not kill the server; count it
                self.dropped += n
                self.failed += 1
                self._failed.append((lo, upto))
            finally:
                with self._lock:
                    self._queued_rows -= n
        if upto != lo:
            self.durable_seq = upto
            if self.on_commit is not None:
                try:
                    self.on_commit(upto)
                except Exception:  # noqa: BLE001 - a waiter's problem must not stop the writer
                    pass
