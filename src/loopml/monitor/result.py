"""Typed results of a drift check: one :class:`FeatureDrift` per column, one :class:`DriftReport`.

Plain dataclasses (no pandas), so the HTTP server, the CLI and the alert rules can all
consume them; :meth:`DriftReport.to_dict` is the JSON form (``loopml monitor drift --json``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

OK = "ok"
DRIFT, NO_DRIFT, UNDECIDED = "drift", "no drift", "could not decide"


@dataclass
class FeatureDrift:
    """The drift verdict for one column.

    ``method`` is the statistic that decided (``ks``, ``chi2``, ``psi``, ``wasserstein``,
    ``jensenshannon``, or ``none`` when the column could not be checked). For the tests
    (``ks``, ``chi2``) ``drifted`` means the Benjamini-Hochberg adjusted p-value
    ``q_value`` is at most ``threshold`` (the report's FDR level); for the distances it
    means ``statistic >= threshold``. ``status`` is ``"ok"`` or says why the column was
    not checked; such a column is never ``drifted`` and its ``statistic`` is ``None``,
    never NaN.
    """

    name: str
    kind: str  # "numeric" | "categorical"
    method: str
    statistic: float | None
    p_value: float | None
    threshold: float | None
    drifted: bool
    status: str = OK
    q_value: float | None = None
    role: str = "input"  # "input" | "output"
    n_reference: int = 0
    n_current: int = 0
    missing_rate: float | None = None
    reference_missing_rate: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    unseen: dict[str, int] = field(default_factory=dict)
    # for plots: bin labels and the two count vectors the statistics were computed on
    bins: list[str] = field(default_factory=list)
    reference_counts: list[int] = field(default_factory=list)
    current_counts: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def tested(self) -> bool:
        """True when this column's verdict comes from a p-value (part of the FDR family)."""
        return self.ok and self.method in ("ks", "chi2") and self.p_value is not None

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))


@dataclass
class DriftReport:
    """All columns' verdicts and the dataset verdict with the rule that decided it."""

    features: list[FeatureDrift]
    drifted: bool
    rule: str  # human-readable: which rule decided and how many features it flagged
    decided_by: str  # "benjamini-hochberg" | "effect size" | "both" | "none"
    fdr: float
    n_reference: int
    n_current: int
    missing_columns: list[str] = field(default_factory=list)
    new_columns: list[str] = field(default_factory=list)
    window: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    version: str | None = None
    outputs: "DriftReport | None" = None  # prediction drift, judged separately

    @property
    def verdict(self) -> str:
        """``"drift"``, ``"no drift"``, or ``"could not decide"`` when no column could be
        checked: ``drifted`` is False then too, but that is not evidence of no drift."""
        if self.drifted:
            return DRIFT
        return NO_DRIFT if any(f.ok for f in self.features) else UNDECIDED

    @property
    def drifted_features(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.drifted]

    @property
    def problems(self) -> list[FeatureDrift]:
        """Columns that could not be checked (status other than ``ok``)."""
        return [f for f in self.features if not f.ok]

    @property
    def share_drifted(self) -> float:
        checked = [f for f in self.features if f.ok]
        return len([f for f in checked if f.drifted]) / len(checked) if checked else 0.0

    def feature(self, name: str) -> FeatureDrift:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_dict(self, *, plots: bool = False) -> dict[str, Any]:
        feats = []
        for f in self.features:
            d = f.to_dict()
            if not plots:
                for k in ("bins", "reference_counts", "current_counts"):
                    d.pop(k, None)
            feats.append(d)
        return _clean({
            "drifted": self.drifted, "verdict": self.verdict, "rule": self.rule, "decided_by": self.decided_by,
            "fdr": self.fdr, "n_reference": self.n_reference, "n_current": self.n_current,
            "share_drifted": self.share_drifted,
            "drifted_features": [f.name for f in self.drifted_features],
            "missing_columns": self.missing_columns, "new_columns": self.new_columns,
            "window": self.window, "model": self.model, "version": self.version,
            "features": feats,
            "outputs": self.outputs.to_dict(plots=plots) if self.outputs is not None else None,
        })


def _clean(o: Any) -> Any:
    """JSON-safe copy: NumPy scalars to Python, non-finite floats to None (never NaN)."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if hasattr(o, "item") and not isinstance(o, (str, bytes)):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o
