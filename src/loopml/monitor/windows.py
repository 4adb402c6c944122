"""Windows over the prediction log: by time (tumbling or sliding) or by row count.

Each window is read with its own DuckDB query over the Parquet part files, so a check
never loads more than one window. Times are epoch seconds (UTC).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from loopml.errors import MonitorError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


@dataclass(frozen=True)
class Window:
    """One window: ``[start, end)`` in epoch seconds, or rows ``[offset, offset + rows)``."""

    index: int
    start: float | None = None
    end: float | None = None
    offset: int | None = None
    rows: int | None = None

    @property
    def label(self) -> str:
        if self.start is not None and self.end is not None:
            return f"{_iso(self.start)} .. {_iso(self.end)}"
        return f"rows {self.offset}..{(self.offset or 0) + (self.rows or 0)}"

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if v is not None}
        d["label"] = self.label
        return d


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def parse_duration(text: str) -> float:
    """``"90s"``, ``"15m"``, ``"2h"``, ``"1d"``, ``"1w"`` -> seconds."""
    m = _DURATION.match(str(text))
    if not m:
        raise MonitorError(f"'{text}' is not a duration; write it like 30s, 15m, 2h, 1d or 1w")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_time(text: str, now: float | None = None) -> float:
    """A point in time: a duration ago (``"2h"``), epoch seconds, or an ISO 8601 timestamp."""
    now = time.time() if now is None else now
    text = str(text).strip()
    if _DURATION.match(text):
        return now - parse_duration(text)
    try:
        return float(text)
    except ValueError:
        pass
    from datetime import datetime, timezone

    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MonitorError(f"'{text}' is not a time; give an ISO timestamp, epoch seconds or a duration ago like 2h") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _files(root: str | Path, model: str) -> list[str]:
    from loopml.monitor.logread import log_files

    return log_files(root, model)  # fresh parts and compacted hours, each row once


def log_extent(root: str | Path, model: str) -> tuple[float | None, float | None, int]:
    """``(first ts, last ts, rows)`` of a model's log, read from Parquet metadata by DuckDB."""
    files = _files(root, model)
    if not files:
        return None, None, 0
    import duckdb

    con = duckdb.connect()
    try:
        lo, hi, n = con.execute(
            "SELECT epoch(CAST(min(ts) AS TIMESTAMPTZ)), epoch(CAST(max(ts) AS TIMESTAMPTZ)), count(*) FROM read_parquet(?, union_by_name=true)", [files]
        ).fetchone()
    finally:
        con.close()
    return (float(lo) if lo is not None else None), (float(hi) if hi is not None else None), int(n)


def time_windows(start: float, end: float, size: float, step: float | None = None) -> list[Window]:
    """Windows of ``size`` seconds every ``step`` (tumbling when ``step == size``), ending at ``end``.

    The last window is ``[end - size, end)``; earlier ones step back until they would start
    before ``start``. Returned oldest first.
    """
    if size <= 0 or (step is not None and step <= 0):
        raise MonitorError("window size and step must be positive")
    step = size if step is None else step
    n = max(1, int(math.floor((end - start - size) / step + 1e-9)) + 1) if end - start >= size else 1
    out = []
    for i in range(n):
        hi = end - (n - 1 - i) * step
        out.append(Window(index=i, start=hi - size, end=hi))
    return out


def count_windows(total: int, size: int, step: int | None = None) -> list[Window]:
    """Windows of ``size`` rows every ``step`` rows (tumbling by default), the last one ending
    at the newest row; a trailing partial window at the start is dropped unless it is the only one."""
    if size <= 0 or (step is not None and step <= 0):
        raise MonitorError("window size and step must be positive")
    step = size if step is None else step
    if total <= size:
        return [Window(index=0, offset=0, rows=total)]
    n = (total - size) // step + 1
    first = total - size - (n - 1) * step
    return [Window(index=i, offset=first + i * step, rows=size) for i in range(n)]


def read_window(root: str | Path, model: str, window: Window | None = None, *, last: int | None = None,
                since: float | None = None, until: float | None = None):
    """The rows of one window (or of ``last``/``since``/``until``) as a DataFrame, oldest first."""
    from loopml.monitor.predlog import read_predictions

    if window is None:
        return read_predictions(root, model, since=since, until=until, last=last)
    if window.start is not None:
        return read_predictions(root, model, since=window.start, until=window.end)
    files = _files(root, model)
    if not files:
        return read_predictions(root, model)
    import duckdb

    con = duckdb.connect()
    try:
        return con.execute(
            "SELECT * FROM read_parquet(?, union_by_name=true) ORDER BY ts, request_id "
            f"LIMIT {int(window.rows or 0)} OFFSET {int(window.offset or 0)}", [files]
        ).df()
    finally:
        con.close()


def iter_windows(root: str | Path, model: str, *, size: str | int, step: str | int | None = None,
                 since: float | None = None, until: float | None = None) -> Iterator[tuple[Window, Any]]:
    """Yield ``(window, frame)`` over a model's log: ``size`` a duration (``"1h"``) for time
    windows or an int for row-count windows; ``step`` the slide (default: tumbling)."""
    lo, hi, total = log_extent(root, model)
    if total == 0:
        return
    if isinstance(size, int) or str(size).isdigit():
        wins = count_windows(total, int(size), int(step) if step is not None else None)
    else:
        start = since if since is not None else lo
        end = until if until is not None else hi + 1e-3  # include the newest row
        wins = time_windows(start, end, parse_duration(str(size)), parse_duration(str(step)) if step else None)
    for w in wins:
        yield w, read_window(root, model, w)


def history_row_counts(root: str | Path, model: str, start: float, end: float, *,
                       windows: int = 12) -> list[int]:
    """Rows in each of the ``windows`` equal-length windows before ``[start, end)``, newest first.

    Only windows that lie entirely after the log's first row count (an empty window before
    the model was served says nothing about its expected traffic); one DuckDB query.
    """
    size = float(end) - float(start)
    files = _files(root, model)
    if size <= 0 or windows <= 0 or not files:
        return []
    lo, _, _ = log_extent(root, model)
    if lo is None:
        return []
    n = min(windows, int(math.floor((start - lo) / size + 1e-9)))
    if n <= 0:
        return []
    import duckdb

    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT CAST(ceil((? - epoch(CAST(ts AS TIMESTAMPTZ))) / ?) AS BIGINT) - 1 AS k, count(*) "
            "FROM read_parquet(?, union_by_name=true) "
            "WHERE CAST(ts AS TIMESTAMPTZ) < to_timestamp(?) AND CAST(ts AS TIMESTAMPTZ) >= to_timestamp(?) "
            "GROUP BY k", [float(start), size, files, float(start), float(start) - n * size]
        ).fetchall()
    finally:
        con.close()
    counts = dict.fromkeys(range(n), 0)
    for k, c in rows:
        if 0 <= int(k) < n:  # window k is [start - (k + 1) * size, start - k * size)
            counts[int(k)] += int(c)
    return [counts[k] for k in range(n)]
