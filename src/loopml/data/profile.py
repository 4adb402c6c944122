"""Reference profiles: what a drift check needs to know about a dataset, computed once.

A :class:`ReferenceProfile` is stored beside each snapshot (``profile.json`` plus
``profile_values.npz`` holding each numeric column's sorted non-missing values, which
exact tests such as two-sample KS need). A drift check reads the profile, never the
raw reference table.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

N_QUANTILE_BINS = 10
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
MAX_CATEGORIES = 1000  # beyond this, the rarest are folded into "__other__"


@dataclass
class ColumnProfile:
    name: str
    kind: str  # "numeric" | "categorical"
    dtype: str
    count: int
    missing: int
    # numeric
    quantiles: dict[str, float] = field(default_factory=dict)
    bin_edges: list[float] = field(default_factory=list)  # inner edges; bins are (-inf,e0], ... (e_k, inf)
    bin_counts: list[int] = field(default_factory=list)
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    # categorical
    frequencies: dict[str, int] = field(default_factory=dict)

    @property
    def missing_rate(self) -> float:
        return self.missing / self.count if self.count else 0.0


@dataclass
class ReferenceProfile:
    row_count: int
    columns: dict[str, ColumnProfile]
    sorted_values: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"row_count": self.row_count, "columns": {k: asdict(v) for k, v in self.columns.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ReferenceProfile":
        return cls(int(d["row_count"]), {k: ColumnProfile(**v) for k, v in d["columns"].items()})

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "profile.json").write_text(json.dumps(self.to_dict(), indent=1, default=_json_default))
        np.savez(folder / "profile_values.npz", **self.sorted_values)

    @classmethod
    def load(cls, folder: str | Path) -> "ReferenceProfile":
        folder = Path(folder)
        prof = cls.from_dict(json.loads((folder / "profile.json").read_text()))
        values = folder / "profile_values.npz"
        if values.exists():
            with np.load(values) as z:
                prof.sorted_values = {k: z[k] for k in z.files}
        return prof


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(type(o))


def column_kind(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "categorical"
    if pd.api.types.is_numeric_dtype(series):
        return "numeric"
    return "categorical"


def stray_text(series: pd.Series) -> np.ndarray | None:
    """Mask of the values that are not numbers in a text column whose values are mostly
    numbers ("12.5" x 999 and "twelve" once): a numeric column with stray text, which
    :func:`column_kind` would read as categorical (and a model would one-hot). None when the
    column is not text, or not mostly numbers, or every value is a number."""
    if not (pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)) \
            or isinstance(series.dtype, pd.CategoricalDtype):
        return None
    present = series.notna().to_numpy()
    is_bool = series.map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy(dtype=bool)
    numbers = pd.to_numeric(series.where(~is_bool), errors="coerce").notna().to_numpy()
    bad = present & ~numbers
    n_present = int(present.sum())
    if not bad.any() or int(numbers.sum()) * 2 <= n_present:
        return None  # text, or mixed half and half: a text column, not a numeric one
    return bad


def profile_column(name: str, series: pd.Series) -> tuple[ColumnProfile, np.ndarray | None]:
    kind = column_kind(series)
    n = int(len(series))
    missing = int(series.isna().sum())
    prof = ColumnProfile(name=name, kind=kind, dtype=str(series.dtype), count=n, missing=missing)
    if kind == "numeric":
        values = np.sort(series.dropna().to_numpy(dtype=np.float64))
        if values.size:
            qs = np.quantile(values, QUANTILES)
            prof.quantiles = {f"p{int(q * 100):02d}": float(v) for q, v in zip(QUANTILES, qs)}
            edges = np.unique(np.quantile(values, np.linspace(0, 1, N_QUANTILE_BINS + 1)[1:-1]))
            prof.bin_edges = [float(e) for e in edges]
            prof.bin_counts = [int(c) for c in bin_counts(values, edges)]
            prof.mean = float(values.mean())
            prof.std = float(values.std(ddof=1)) if values.size > 1 else 0.0
            prof.min, prof.max = float(values[0]), float(values[-1])
        return prof, values
    counts = series.dropna().astype(str).value_counts()
    if len(counts) > MAX_CATEGORIES:
        other = int(counts.iloc[MAX_CATEGORIES:].sum())
        counts = counts.iloc[:MAX_CATEGORIES]
        prof.frequencies = {**{str(k): int(v) for k, v in counts.items()}, "__other__": other}
    else:
        prof.frequencies = {str(k): int(v) for k, v in counts.items()}
    return prof, None


def bin_counts(values: np.ndarray, edges: np.ndarray | list[float]) -> np.ndarray:
    """Counts in bins (-inf, e0], (e0, e1], ..., (e_last, inf): len(edges) + 1 bins."""
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    return np.bincount(idx, minlength=len(edges) + 1)


def build_profile(df: pd.DataFrame) -> ReferenceProfile:
    """Profile every column of a table."""
    columns: dict[str, ColumnProfile] = {}
    values: dict[str, np.ndarray] = {}
    for name in df.columns:
        prof, vals = profile_column(str(name), df[name])
        columns[str(name)] = prof
        if vals is not None:
            values[str(name)] = vals
    return ReferenceProfile(row_count=int(len(df)), columns=columns, sorted_values=values)
