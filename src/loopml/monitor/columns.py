"""Map prediction-log columns (``in.x``, ``out.y``) to plain feature names."""

from __future__ import annotations

import pandas as pd

from loopml.monitor.predlog import IN_PREFIX, META_COLUMNS, OUT_PREFIX


def is_log_frame(df: pd.DataFrame) -> bool:
    """True when the frame comes from the prediction log (has ``in.``/``out.`` columns)."""
    return any(str(c).startswith((IN_PREFIX, OUT_PREFIX)) for c in df.columns)


def split_log_columns(df: pd.DataFrame, role: str = "input") -> dict[str, pd.Series]:
    """The frame's columns of one role, by plain name.

    ``role="input"``: ``in.<feature>`` columns with the prefix stripped, or, for a frame
    that is not a log window, every column but the log's metadata. ``role="output"``:
    ``out.<name>`` columns, keeping their ``out.`` names (``out.prediction``...).
    """
    cols = [str(c) for c in df.columns]
    if role == "output":
        return {c: df[c] for c in cols if c.startswith(OUT_PREFIX)}
    if is_log_frame(df):
        return {c[len(IN_PREFIX):]: df[c] for c in cols if c.startswith(IN_PREFIX)}
    return {c: df[c] for c in cols if c not in META_COLUMNS}
