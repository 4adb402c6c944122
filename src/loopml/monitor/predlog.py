"""The prediction log: append-only Parquet part files, written off the hot path.

Layout: ``<root>/<model>/part-<epoch_ms>-<seq>-<uuid>.parquet``. One row per prediction
with columns ``request_id, ts (UTC timestamp), model, version, variant``, then one
``in.<feature>`` column per input and one ``out.<name>`` column per output. Each part
file is written to a temporary name, fsynced, and renamed, so a reader never sees a
half-written file and nothing acknowledged by :meth:`PredictionLogWriter.close` is lost.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any

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


def write_part(folder: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows as one Parquet part file, atomically (temp + fsync + rename)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame.from_records([flatten_record(r) for r in rows])
    df["ts"] = pd.to_datetime(df["ts"], unit="s", utc=True)
    for col in ("request_id", "model", "version", "variant"):
        df[col] = df[col].astype("string")
    table = pa.Table.from_pandas(df, preserve_index=False)
    name = f"part-{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:12]}.parquet"
    tmp = folder / f".{name}.tmp"
    with open(tmp, "wb") as fh:
        pq.write_table(table, fh)
        fh.flush()
        os.fsync(fh.fileno())
    final = folder / name
    os.rename(tmp, final)
    _fsync_dir(folder)
    return final


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PredictionLogWriter:
    """Batches prediction records in memory (bounded) and writes them from a thread.

    ``append`` never blocks the caller: when the queue is full the records are
    counted in ``dropped`` and ``append`` returns False.
    """

    def __init__(self, root: str | Path, model: str, *, flush_rows: int = 1000,
                 flush_interval_s: float = 1.0, max_queue_rows: int = 200_000) -> None:
        self.root = Path(root)
        self.model = model
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.max_queue_rows = max_queue_rows
        self.dropped = 0
        self.written = 0
        self._queue: queue.Queue[list[dict[str, Any]] | None] = queue.Queue()
        self._queued_rows = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.last_write_ts: float | None = None

    @property
    def folder(self) -> Path:
        return self.root / self.model

    @property
    def pending(self) -> int:
        return self._queued_rows

    def start(self) -> "PredictionLogWriter":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"predlog-{self.model}", daemon=True)
            self._thread.start()
        return self

    def append(self, records: list[dict[str, Any]]) -> bool:
        n = len(records)
        with self._lock:
            if self._queued_rows + n > self.max_queue_rows:
                self.dropped += n
                return False
            self._queued_rows += n
        self._queue.put(records)
        return True

    def close(self) -> None:
        """Flush everything queued, then stop the thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join()
        self._thread = None

    def _run(self) -> None:
        buf: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.flush_interval_s
        while True:
            timeout = max(0.0, deadline - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = []
            stop = item is None
            if item:
                buf.extend(item)
            if buf and (stop or len(buf) >= self.flush_rows or time.monotonic() >= deadline):
                self._flush(buf)
                buf = []
            if time.monotonic() >= deadline:
                deadline = time.monotonic() + self.flush_interval_s
            if stop:
                return

    def _flush(self, buf: list[dict[str, Any]]) -> None:
        try:
            write_part(self.folder, buf)
            self.written += len(buf)
            self.last_write_ts = time.time()
        except Exception:  # noqa: BLE001 - a failed write must not kill the server; count it
            self.dropped += len(buf)
        finally:
            with self._lock:
                self._queued_rows -= len(buf)


def read_predictions(root: str | Path, model: str, *, since: float | None = None,
                     until: float | None = None, limit: int | None = None,
                     last: int | None = None):
    """Read the log of one model as a DataFrame, via DuckDB (only the asked window is loaded).

    ``since``/``until`` are epoch seconds; ``last`` keeps the most recent N rows.
    """
    import duckdb
    import pandas as pd

    folder = Path(root) / model
    files = sorted(str(p) for p in folder.glob("part-*.parquet")) if folder.exists() else []
    if not files:
        return pd.DataFrame(columns=list(META_COLUMNS))
    where, params = [], []
    if since is not None:
        where.append("CAST(ts AS TIMESTAMPTZ) >= to_timestamp(?)")  # ts may be TIMESTAMPTZ_NS
        params.append(float(since))
    if until is not None:
        where.append("CAST(ts AS TIMESTAMPTZ) < to_timestamp(?)")
        params.append(float(until))
    sql = "SELECT * FROM read_parquet(?, union_by_name=true)"
    if where:
        sql += " WHERE " + " AND ".join(where)
    if last is not None:
        sql = f"SELECT * FROM ({sql} ORDER BY ts DESC LIMIT {int(last)}) ORDER BY ts"
    else:
        sql += " ORDER BY ts"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
    con = duckdb.connect()
    try:
        return con.execute(sql, [files, *params]).df()
    finally:
        con.close()
