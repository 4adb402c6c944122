"""Prediction logging off the hot path.

:class:`RecordingPredictor` wraps a predictor (same ``predict(rows)`` signature) and,
after each batch, hands ``(rows, prediction)`` to a :class:`PredictionRecorder`: one
``put`` on a queue. A recorder thread turns batches into records and appends them to
the workspace's :class:`~loopml.monitor.predlog.PredictionLogWriter`, which writes
Parquet in the background. Memory is bounded: past ``max_pending_rows`` the batch is
counted in ``dropped`` instead of queued.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from loopml.serve.batching import merge_rows
from loopml.serve.runtime import InputColumn, Prediction, Predictor, Rows


def proba_of(pred: Prediction) -> list[float | None]:
    """One probability per row: the positive class when binary, else the top class."""
    if pred.proba is None:
        return [None] * len(pred.predict)
    p = np.asarray(pred.proba, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 2:
        return p[:, 1].tolist()
    return p.max(axis=1).tolist() if p.ndim == 2 else p.tolist()


class PredictionRecorder:
    """Turns predicted batches into prediction-log records on its own thread."""

    def __init__(self, root: str | Path, model: str, *, max_pending_rows: int = 200_000,
                 flush_interval_s: float = 1.0) -> None:
        self.root = Path(root)
        self.model = model
        self.max_pending_rows = max_pending_rows
        self.flush_interval_s = flush_interval_s
        self.pending = 0
        self.dropped = 0
        self.recorded = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.writer: Any = None
        self._started = time.time()

    def start(self) -> "PredictionRecorder":
        from loopml.monitor.predlog import PredictionLogWriter

        if self._thread is None:
            import pandas  # noqa: F401 - pay the first write's imports now, not mid-traffic
            import pyarrow.parquet  # noqa: F401

            # large, rare flushes: each write holds the GIL for a while, so fewer is kinder to p99
            self.writer = PredictionLogWriter(self.root, self.model, flush_rows=50_000,
                                              flush_interval_s=self.flush_interval_s).start()
            self._thread = threading.Thread(target=self._run, name=f"recorder-{self.model}", daemon=True)
            self._thread.start()
        return self

    def record(self, rows: Rows, pred: Prediction, version: str, variant: str,
               inputs: list[InputColumn]) -> None:
        """Queue one predicted batch; never blocks. ``ts`` is taken now."""
        if self._thread is None:
            return
        if self.pending + rows.n > self.max_pending_rows:
            self.dropped += rows.n
            return
        self.pending += rows.n
        self._queue.put((rows, pred, version, variant, inputs, time.time()))

    @property
    def lag_seconds(self) -> float:
        """Seconds since the log last caught up, 0 when nothing waits."""
        w = self.writer
        if w is None or (self.pending == 0 and not w.pending):
            return 0.0
        last = w.last_write_ts or self._started
        return max(0.0, time.time() - last)

    def _run(self) -> None:
        stop = False
        while not stop:
            items = [self._queue.get()]
            while len(items) < 4096:  # coalesce what queued up: one conversion per column
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if items[-1] is None:
                stop = True
                items.pop()
            groups: dict[tuple, list] = {}
            for it in items:
                groups.setdefault((it[2], it[3], id(it[4])), []).append(it)
            for group in groups.values():
                self._write(group)

    def _write(self, group: list) -> None:
        n = sum(it[0].n for it in group)
        try:
            rows = merge_rows([it[0] for it in group])
            pred = _concat([it[1] for it in group])
            _, _, version, variant, inputs, _ = group[0]
            records = build_records(rows, pred, version, variant, inputs, group[0][5], model=self.model)
            for rec, ts in zip(records, _row_times(group)):
                rec["ts"] = ts
            if self.writer.append(records):
                self.recorded += n
            else:
                self.dropped += n
        except Exception:  # noqa: BLE001 - logging must never take serving down
            self.dropped += n
        finally:
            self.pending -= n

    def close(self) -> None:
        """Record everything queued, flush and fsync the log, stop the thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join()
        self._thread = None
        self.writer.close()


def _concat(preds: list[Prediction]) -> Prediction:
    if len(preds) == 1:
        return preds[0]
    proba = None if preds[0].proba is None else np.concatenate([p.proba for p in preds])
    return Prediction(np.concatenate([p.predict for p in preds]), proba)


def _row_times(group: list) -> list[float]:
    return [it[5] for it in group for _ in range(it[0].n)]


def build_records(rows: Rows, pred: Prediction, version: str, variant: str,
                  inputs: list[InputColumn], ts: float, model: str | None = None) -> list[dict]:
    names = [c.name for c in inputs] or list(rows.columns)
    types = {c.name: c for c in inputs}
    cols = []
    for name in names:
        values = rows.columns[name]
        col = types.get(name)
        if col is not None and (col.numeric or col.type == "boolean"):
            values = np.asarray(values, dtype=col.dtype).tolist()
        elif not isinstance(values, list):
            values = list(values)
        cols.append(values)
    preds = pred.predict.tolist()
    probas = proba_of(pred)
    ids = rows.ids or [None] * rows.n
    out = []
    for i in range(rows.n):
        out.append({
            "request_id": ids[i] or uuid.uuid4().hex,
            "ts": ts,
            "model": model,
            "version": version,
            "variant": variant,
            "inputs": {n: c[i] for n, c in zip(names, cols)},
            "outputs": {"prediction": preds[i], "proba": probas[i]},
        })
    return out


class RecordingPredictor:
    """Wraps ``inner`` and records every successful prediction with a variant label."""

    def __init__(self, inner: Predictor, recorder: PredictionRecorder | None, *, model: str,
                 version: str, inputs: list[InputColumn], label: str) -> None:
        self.inner = inner
        self.recorder = recorder
        self.model = model
        self.version = version
        self.inputs = inputs
        self.label = label  # the endpoint relabels it when its policy changes

    async def predict(self, rows: Rows) -> Prediction:
        pred = await self.inner.predict(rows)
        if self.recorder is not None:
            self.recorder.record(rows, pred, self.version, self.label, self.inputs)
        return pred
