"""Class columns: integers that name classes are compared as categories, not as numbers.

The reference profile (``loopml.data.profile``) profiles every numeric dtype as numeric, so a
classifier's 0/1 labels, and its predictions compared with them, would be KS-tested as
numbers. A drift check treats such a column as categorical: the reference's class counts are
rebuilt exactly from its stored sorted values, and the window's values are mapped to the same
labels (``1``, ``1.0`` and ``"1"`` are all class ``"1"``).

Which numeric columns are classes: those the caller names (a classification target and the
predictions compared with it, contract columns with ``allowed`` values or a ``category`` /
``bool`` dtype, see :func:`class_columns`), and any integer column with at most
:data:`AUTO_MAX_CLASSES` distinct reference values (a 0/1 flag).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from loopml.data.profile import ColumnProfile, ReferenceProfile
    from loopml.spec import ProjectSpec

AUTO_MAX_CLASSES = 2  # without a declaration, only a binary integer column is surely a class
MAX_CLASSES = 100  # a declared class column with more reference values stays numeric


def _integral(values: np.ndarray) -> bool:
    return bool(values.size) and bool(np.all(np.isfinite(values))) and bool(np.all(values == np.round(values)))


def _label(v: object) -> object:
    """The class label of one value: integral numbers as integers (``1.0`` -> ``"1"``)."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return np.nan
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return str(int(v)) if float(v).is_integer() else str(float(v))
    text = str(v).strip()
    try:
        f = float(text)
    except ValueError:
        return text
    return str(int(f)) if f.is_integer() else text


def class_labels(series: pd.Series) -> pd.Series:
    """``series`` as class labels (strings; missing stays missing)."""
    return pd.Series([_label(v) for v in series.to_numpy(dtype=object)], index=series.index, dtype=object)


def is_auto_class(prof: "ColumnProfile", sorted_values: np.ndarray | None) -> bool:
    """A numeric column that is a class without being declared one: integral, at most
    :data:`AUTO_MAX_CLASSES` distinct values."""
    if prof.kind != "numeric" or sorted_values is None or not _integral(sorted_values):
        return False
    return int(np.count_nonzero(np.diff(sorted_values))) + 1 <= AUTO_MAX_CLASSES


def as_categorical(prof: "ColumnProfile", sorted_values: np.ndarray | None) -> "ColumnProfile | None":
    """The categorical profile of a numeric class column, or None when it cannot be rebuilt
    exactly (no stored values) or the column has too many values to be classes."""
    if prof.kind != "numeric" or sorted_values is None or not sorted_values.size:
        return None
    values, counts = np.unique(sorted_values, return_counts=True)
    if values.size > MAX_CLASSES:
        return None
    freq = {str(_label(v)): int(c) for v, c in sorted(zip(values, counts), key=lambda vc: -vc[1])}
    return replace(prof, kind="categorical", quantiles={}, bin_edges=[], bin_counts=[], mean=None, std=None,
                   min=None, max=None, frequencies=freq)


def class_columns(spec: "ProjectSpec | None", reference: "ReferenceProfile") -> set[str]:
    """Reference columns the spec declares as classes: a classification target, and contract
    columns with ``allowed`` values or a ``category`` / ``bool`` dtype."""
    if spec is None:
        return set()
    names = {name for name, c in spec.contract.columns.items()
             if c.allowed is not None or c.dtype in ("category", "bool")}
    if spec.task == "classification":
        names.add(spec.data.target)
    return {n for n in names if n in reference.columns}
