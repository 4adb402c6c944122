"""Prediction logging off the hot path.

:class:`RecordingPredictor` wraps a predictor (same ``predict(rows)`` signature) and,
after each batch, hands the batch to a :class:`PredictionRecorder`. Recording a batch is
a handful of references appended to a buffer: the typed input arrays the model already
saw (``Prediction.inputs``), the output arrays, the row ids and one timestamp. No row is
turned into a Python object on the event loop; the
:class:`~loopml.monitor.predlog.PredictionLogWriter` thread concatenates the columns and
writes Parquet. Memory is bounded by the writer's ``max_queue_rows``: past it a batch is
counted in ``dropped`` instead of queued.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from loopml.serve.runtime import InputColumn, Prediction, Predictor, Rows


def proba_of(pred: Prediction) -> np.ndarray | None:
    """One probability per row: the positive class when binary, else the top class."""
    if pred.proba is None:
        return None
    p = np.asarray(pred.proba, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 2:
        return p[:, 1]
    return p.max(axis=1) if p.ndim == 2 else p


def _log_dtype(col: InputColumn | None):
    """The logged dtype of an input: wide ints and floats, as the row log always had."""
    if col is None:
        return None
    if col.type in ("long", "integer"):
        return np.int64
    if col.type in ("double", "float"):
        return np.float64
    return None


def input_columns(rows: Rows, pred: Prediction, inputs: list[InputColumn],
                  names: tuple[str, ...] | None = None) -> Any:
    """The inputs of one batch for the log, from what the model saw when possible: an input
    block ``(names, X)`` when the model saw one float matrix, else name -> 1-d array or list."""
    seen = pred.inputs
    if isinstance(seen, np.ndarray) and seen.ndim == 2 and seen.shape[1] == len(inputs):
        if seen.dtype == np.float64 and all(c.type in ("double", "float") for c in inputs):
            return (names or tuple(c.name for c in inputs)), seen
        out = {}
        for j, c in enumerate(inputs):
            col = seen[:, j]
            dtype = _log_dtype(c)
            out[c.name] = col.astype(dtype) if dtype is not None and col.dtype != dtype else col
        return out
    if isinstance(seen, dict):
        types = {c.name: c for c in inputs}
        out = {}
        for name, col in seen.items():
            dtype = _log_dtype(types.get(name))
            out[name] = col.astype(dtype) if dtype is not None and col.dtype != dtype else col
        return out
    names = [c.name for c in inputs] or list(rows.columns)
    return {name: rows.columns[name] for name in names if name in rows.columns}


class PredictionRecorder:
    """Feeds predicted batches, as columns, to the model's prediction-log writer."""

    def __init__(self, root: str | Path, model: str, *, max_pending_rows: int = 200_000,
                 flush_interval_s: float = 1.0, flush_rows: int = 50_000) -> None:
        self.root = Path(root)
        self.model = model
        self.max_pending_rows = max_pending_rows
        self.flush_interval_s = flush_interval_s
        self.flush_rows = flush_rows
        self.dropped = 0  # batches refused or failed before reaching the writer
        self.recorded = 0
        self.writer: Any = None
        self._started = time.time()

    def start(self) -> "PredictionRecorder":
        from loopml.monitor.predlog import PredictionLogWriter

        if self.writer is None:
            import pyarrow.parquet  # noqa: F401 - pay the first write's imports now, not mid-traffic

            self.writer = PredictionLogWriter(self.root, self.model, flush_rows=self.flush_rows,
                                              flush_interval_s=self.flush_interval_s,
                                              max_queue_rows=self.max_pending_rows).start()
        return self

    @property
    def pending(self) -> int:
        return 0  # the writer counts what waits (``writer.pending``); nothing waits here

    def record(self, rows: Rows, pred: Prediction, version: str, variant: str,
               inputs: list[InputColumn], names: tuple[str, ...] | None = None) -> None:
        """Queue one predicted batch; never blocks. ``ts`` is taken now."""
        w = self.writer
        if w is None:
            return
        n = rows.n
        try:
            ids = rows.ids
            if ids is None or len(ids) != n:
                ids = [uuid.uuid4().hex for _ in range(n)]
            elif None in ids:
                ids = [i or uuid.uuid4().hex for i in ids]
            meta = {"request_id": ids, "ts": time.time(), "model": self.model, "version": version,
                    "variant": variant}
            outputs = {"prediction": pred.predict, "proba": proba_of(pred)}
            ok = w.append_columns(meta, input_columns(rows, pred, inputs, names), outputs, n)
        except Exception:  # noqa: BLE001 - logging must never take serving down
            self.dropped += n
            return
        if ok:
            self.recorded += n

    @property
    def lag_seconds(self) -> float:
        """Seconds since the log last caught up, 0 when nothing waits."""
        w = self.writer
        if w is None or not w.pending:
            return 0.0
        last = w.last_write_ts or self._started
        return max(0.0, time.time() - last)

    def close(self) -> None:
        """Write everything queued (fsynced) and stop the writer thread."""
        if self.writer is not None:
            self.writer.close()


class RecordingPredictor:
    """Wraps ``inner`` and records every successful prediction with a variant label."""

    def __init__(self, inner: Predictor, recorder: PredictionRecorder | None, *, model: str,
                 version: str, inputs: list[InputColumn], label: str) -> None:
        self.inner = inner
        self.recorder = recorder
        self.model = model
        self.version = version
        self.inputs = inputs
        self.names = tuple(c.name for c in inputs)
        self.label = label  # the endpoint relabels it when its policy changes

    async def predict(self, rows: Rows) -> Prediction:
        pred = await self.inner.predict(rows)
        if self.recorder is not None:
            self.recorder.record(rows, pred, self.version, self.label, self.inputs, self.names)
        return pred
