"""The probe set of a column-signature model: the rows ONNX parity is checked on.

The input example, then rows drawn from the version's training profile (numbers across and
a little beyond their range, categories by frequency plus an unseen one and a missing one),
typed exactly as the serving path types a request.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _profile(registry: Any, ref: Any) -> Any:
    try:
        return registry.reference_profile(ref)
    except Exception:  # noqa: BLE001 - no training profile: synthesise from the example alone
        return None


def probe_frame(inputs: list[dict], example: Any, profile: Any, n: int, seed: int = 0) -> Any:
    """The rows parity is checked on, typed as the serving path types them: the input example,
    then ``n`` rows drawn from the training profile (numbers across and a little beyond their
    range, categories by frequency plus an unseen one and a missing one), else around the
    example's values."""
    import pandas as pd

    from loopml.serve.runtimes.columns import InputColumn

    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {}
    ex = pd.DataFrame(example) if example is not None else pd.DataFrame()
    for c in inputs:
        name, kind = c["name"], c.get("type", "double")
        prof = getattr(profile, "columns", {}).get(name) if profile is not None else None
        seen = ex[name].tolist() if name in ex.columns else []
        if kind in ("double", "float", "long", "integer"):
            lo, hi = _range(prof, seen)
            span = hi - lo or 1.0
            values = rng.uniform(lo - 0.1 * span, hi + 0.1 * span, n)
            values[: min(n, 3)] = [lo, hi, 0.0][: min(n, 3)]
            if kind in ("long", "integer"):
                values = np.round(values)
            elif any(v is None or v != v for v in seen) and n > 3:
                values[3] = np.nan  # the example has missing numbers: so does the probe set
            cols[name] = seen + values.tolist()
        elif kind == "boolean":
            cols[name] = seen + (rng.random(n) < 0.5).tolist()
        else:
            cats = list((prof.frequencies if prof is not None and prof.frequencies else {}).keys())
            cats = cats or sorted({str(v) for v in seen if v is not None}) or ["a"]
            draws = [cats[i] for i in rng.integers(0, len(cats), n)]
            draws[: min(n, 2)] = ["\u00abunseen\u00bb", None][: min(n, 2)]
            cols[name] = seen + draws
    typed = {}
    for c in inputs:  # exactly the serving path's typing (the runtime's InputColumn conversion)
        from loopml.serve.runtimes.columns import _to_column

        typed[c["name"]] = _to_column(InputColumn(c["name"], c.get("type", "double")), cols[c["name"]])
    return pd.DataFrame(typed, copy=False)


def _range(prof: Any, seen: list) -> tuple[float, float]:
    if prof is not None and prof.min is not None and prof.max is not None:
        return float(prof.min), float(prof.max)
    vals = [float(v) for v in seen if v is not None and v == v]
    if vals:
        return min(vals) - 1.0, max(vals) + 1.0
    return -3.0, 3.0
