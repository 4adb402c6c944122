"""The retraining window: the spec's ``retrain.source`` (a file, or every file in a folder)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from loopml.config import Workspace
from loopml.spec import ProjectSpec


def retrain_frame(spec: ProjectSpec, project_dir: Path, workspace: Workspace) -> tuple[pd.DataFrame | None, str]:
    """(frame or None, source): None means "let the pipeline read ``source`` itself"."""
    from loopml.data.source import read_table

    r = spec.retrain
    source = r.source or spec.data.source
    path = Path(source) if Path(source).is_absolute() else project_dir / source
    frames: list[pd.DataFrame] = []
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".csv", ".parquet", ".pq"))
        frames = [read_table(str(p)) for p in files]
    elif r.include_reference or r.max_rows:
        frames = [read_table(source, base_dir=project_dir)]
    if not frames:
        return None, source
    if r.include_reference:
        frames.insert(0, read_table(spec.data.source, base_dir=project_dir))
    df = pd.concat(frames, ignore_index=True)
    if spec.data.timestamp and spec.data.timestamp in df.columns:
        df = df.sort_values(spec.data.timestamp, kind="mergesort", ignore_index=True)
    if r.max_rows:
        df = df.tail(r.max_rows).reset_index(drop=True)
    return df, source
