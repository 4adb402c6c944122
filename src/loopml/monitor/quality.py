"""Data quality of one window against the reference profile.

Per column: missing rate (and the reference's), type violations (values that are not
numbers in a numeric column), out-of-range values (outside the reference's
``[min, max]``, or explicit bounds such as the data contract's), unseen categories.
Per window: volume against the expected row count, which :func:`expected_volume` derives
from the prediction log's history (the median rows of the equal-length windows before
this one); without such history the status says so instead of guessing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from loopml.monitor.columns import split_log_columns
from loopml.monitor.result import _clean

if TYPE_CHECKING:
    from loopml.data.profile import ReferenceProfile

VOLUME_TOLERANCE = 0.5  # a window off the expected volume by more than half is flagged
VOLUME_HISTORY = 12  # earlier windows whose median row count is the expected volume
MISSING_TOLERANCE = 0.1  # missing rate this much above the reference's is flagged


@dataclass
class ColumnQuality:
    name: str
    rows: int
    missing: int
    missing_rate: float
    reference_missing_rate: float | None
    type_violations: int = 0
    out_of_range: int = 0
    unseen: int = 0
    unseen_values: dict[str, int] = field(default_factory=dict)
    present: bool = True

    @property
    def issues(self) -> list[str]:
        out = []
        if not self.present:
            return [f"{self.name}: column missing"]
        ref = self.reference_missing_rate or 0.0
        if self.rows and self.missing_rate > ref + MISSING_TOLERANCE:
            out.append(f"{self.name}: missing rate {self.missing_rate:.1%} (reference {ref:.1%})")
        if self.type_violations:
            out.append(f"{self.name}: {_n(self.type_violations, 'value')} of the wrong type")
        if self.out_of_range:
            out.append(f"{self.name}: {_n(self.out_of_range, 'value')} out of range")
        if self.unseen:
            names = ", ".join(list(self.unseen_values)[:5])
            out.append(f"{self.name}: {_n(self.unseen, 'value')} in unseen categories ({names})")
        return out


@dataclass
class QualityReport:
    rows: int
    columns: list[ColumnQuality]
    expected_rows: float | None = None
    window: dict[str, Any] = field(default_factory=dict)
    volume_history: int | None = None  # how many earlier windows gave expected_rows (None: not looked up)
    window_seconds: float | None = None  # length of this window and of each history window

    @property
    def volume_ratio(self) -> float | None:
        return self.rows / self.expected_rows if self.expected_rows else None

    @property
    def volume_status(self) -> str:
        """``"ok"``, ``"low"``, ``"high"``, ``"insufficient history"`` or ``"unknown"``
        (no expected volume given and none looked up)."""
        if self.expected_rows is None:
            return "unknown" if self.volume_history is None else "insufficient history"
        if self.expected_rows == 0:
            return "high" if self.rows else "ok"
        r = self.rows / self.expected_rows
        return "low" if r < 1 - VOLUME_TOLERANCE else "high" if r > 1 + VOLUME_TOLERANCE else "ok"

    @property
    def volume_message(self) -> str:
        """One line for people: ``"volume low: 120 rows vs ~1,000 expected (median of 12 earlier 10m windows)"``."""
        status = self.volume_status
        if status == "unknown":
            return f"volume: {self.rows:,} rows (no expected volume)"
        span = f" {_duration(self.window_seconds)}" if self.window_seconds else ""
        if status == "insufficient history":
            return (f"volume: {self.rows:,} rows; insufficient history to expect a volume "
                    f"(no complete{span} window logged before this one)")
        n = self.volume_history
        notes = [f"median of {n} earlier{span} window{'s' if n != 1 else ''}"] if n else []
        if self.volume_ratio is not None:
            notes.append(f"ratio {self.volume_ratio:.2f}")
        note = f" ({', '.join(notes)})" if notes else ""
        return f"volume {status}: {self.rows:,} rows vs ~{self.expected_rows:,.0f} expected{note}"

    @property
    def issues(self) -> list[str]:
        out = [i for c in self.columns for i in c.issues]
        if self.volume_status in ("low", "high"):
            out.insert(0, self.volume_message)
        return out

    @property
    def ok(self) -> bool:
        return not self.issues

    def metrics(self) -> dict[str, float]:
        """Flat numbers for alert rules and gauges: ``missing_rate.<col>``, ``volume_ratio``..."""
        m: dict[str, float] = {"rows": float(self.rows)}
        if self.volume_ratio is not None:
            m["volume_ratio"] = self.volume_ratio
            m["expected_rows"] = float(self.expected_rows)
        for c in self.columns:
            if not c.present:
                continue
            m[f"missing_rate.{c.name}"] = c.missing_rate
            den = max(c.rows - c.missing, 1)
            m[f"out_of_range_rate.{c.name}"] = c.out_of_range / den
            m[f"type_violation_rate.{c.name}"] = c.type_violations / max(c.rows, 1)
            m[f"unseen_rate.{c.name}"] = c.unseen / den
        return m

    def to_dict(self) -> dict[str, Any]:
        return _clean({"rows": self.rows, "expected_rows": self.expected_rows, "volume_ratio": self.volume_ratio,
                       "volume_status": self.volume_status, "volume": self.volume_message,
                       "volume_history": self.volume_history, "window_seconds": self.window_seconds,
                       "ok": self.ok, "issues": self.issues, "window": self.window,
                       "columns": [asdict(c) for c in self.columns]})


def check_quality(reference: "ReferenceProfile", current: pd.DataFrame, *, features: list[str] | None = None,
                  expected_rows: float | None = None, volume_history: int | None = None,
                  window_seconds: float | None = None,
                  bounds: dict[str, tuple[float | None, float | None]] | None = None) -> QualityReport:
    """Quality of ``current`` (a log window or a plain table) against ``reference``.

    ``expected_rows`` is the window's expected volume (see :func:`expected_volume`);
    ``volume_history`` how many earlier windows it came from (0: there were none, so the
    volume status is "insufficient history"); ``window_seconds`` the window's length.
    """
    cols = split_log_columns(current)
    names = features if features is not None else [c for c in reference.columns if c in cols]
    out = []
    for name in names:
        prof = reference.columns.get(name)
        series = cols.get(name)
        ref_missing = prof.missing_rate if prof is not None else None
        if series is None:
            out.append(ColumnQuality(name, 0, 0, 0.0, ref_missing, present=False))
            continue
        n = len(series)
        missing = int(series.isna().sum())
        q = ColumnQuality(name, n, missing, missing / n if n else 0.0, ref_missing)
        if prof is not None and prof.kind == "numeric":
            _numeric_quality(q, series, prof, (bounds or {}).get(name))
        elif prof is not None:
            counts = series.dropna().astype(str).value_counts()
            unseen = counts[~counts.index.isin(list(prof.frequencies))]
            if "__other__" not in prof.frequencies and len(unseen):
                q.unseen = int(unseen.sum())
                q.unseen_values = {str(k): int(v) for k, v in unseen.head(20).items()}
        out.append(q)
    return QualityReport(rows=len(current), columns=out, expected_rows=expected_rows,
                         volume_history=volume_history, window_seconds=window_seconds)


def _numeric_quality(q: ColumnQuality, series: pd.Series, prof, bound) -> None:
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        coerced = pd.to_numeric(series, errors="coerce")
        q.type_violations = int(coerced.isna().sum() - series.isna().sum())
        values = coerced.to_numpy(dtype=np.float64, na_value=np.nan)
    lo, hi = bound if bound is not None else (prof.min, prof.max)
    with np.errstate(invalid="ignore"):
        bad = np.zeros(values.size, dtype=bool)
        if lo is not None:
            bad |= values < lo
        if hi is not None:
            bad |= values > hi
    q.out_of_range = int(bad.sum())


def expected_rows_from_history(row_counts: list[int]) -> float | None:
    """The expected volume of the next window: the median of earlier windows' rows."""
    return float(np.median(row_counts)) if row_counts else None


def window_span(window: pd.DataFrame) -> tuple[float, float] | None:
    """``(start, end)`` epoch seconds covered by a log window's ``ts``; None when it has
    fewer than two distinct times (a rate cannot be read from it)."""
    if "ts" not in window.columns or len(window) < 2:
        return None
    ts = pd.to_datetime(window["ts"], utc=True)
    lo, hi = ts.min(), ts.max()
    if pd.isna(lo) or pd.isna(hi) or hi <= lo:
        return None
    return lo.timestamp(), hi.timestamp()


def expected_volume(log_root: Any, model: str, start: float, end: float, *,
                    windows: int = VOLUME_HISTORY) -> tuple[float | None, int]:
    """``(expected rows, history windows used)`` for the window ``[start, end)`` of a model's
    log: the median row count of up to ``windows`` equal-length windows just before it
    (only those after the log's first row). ``(None, 0)`` when there is no such window."""
    from loopml.monitor.windows import history_row_counts

    counts = history_row_counts(log_root, model, start, end, windows=windows)
    return expected_rows_from_history(counts), len(counts)


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and abs(seconds / size - round(seconds / size)) < 0.05:
            return f"{round(seconds / size)}{unit}"
    if seconds >= 120:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
