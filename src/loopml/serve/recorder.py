"""Prediction logging off the hot path.

:class:`RecordingPredictor` wraps a predictor (same ``predict(rows)`` signature) and,
after each batch, hands the batch to a :class:`PredictionRecorder`. Recording a batch is
a handful of references appended to a buffer: the typed input arrays the model already
saw (``Prediction.inputs``), the output arrays, the row ids and one timestamp. No row is
turned into a Python object on the event loop; the
:class:`~loopml.monitor.predlog.PredictionLogWriter` thread concatenates the columns and
writes Parquet. Memory is bounded by the writer's ``max_queue_rows``: past it a batch is
counted in ``dropped`` instead of queued.

Two modes (``monitoring.prediction_log.mode``, ``LOOPML_PREDICTION_LOG_MODE``): ``async``
answers at once and writes within ``flush_interval_s``, so a crash loses the rows the
``loopml_prediction_log_pending_rows`` gauge counts; ``acknowledged`` holds each answer
until its rows are in an fsynced group commit (:meth:`PredictionRecorder.log_mark` before
the prediction, :meth:`PredictionRecorder.durable` after it), and answers 503 when they
could not be written.

The recorder also compacts its model's log in a background thread (every
``compact_interval_s``; see :mod:`loopml.monitor.compaction`): the server is where parts
are made, it runs whether or not a controller does, and the compaction lock lets exactly
one of several workers or replicas do each round.

When the log root carries ``remote_url`` (``LOOPML_HOME=s3://...``), the local folder is an
outbox instead: a :class:`~loopml.monitor.outbox.Publisher` uploads sealed parts to
``<home>/predictions/<model>/<replica>/`` and compacts this replica's prefix every
``compact_interval_s``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loopml.errors import PredictionNotLogged
from loopml.spec import PredictionLogSpec
from loopml.serve.runtime import InputColumn, Prediction, Predictor, Rows

log = logging.getLogger("loopml.serve")
MODES = ("async", "acknowledged")
ENV = {"mode": "LOOPML_PREDICTION_LOG_MODE", "retention_days": "LOOPML_PREDICTION_LOG_RETENTION_DAYS",
       "max_bytes": "LOOPML_PREDICTION_LOG_MAX_BYTES", "compact_interval_s": "LOOPML_PREDICTION_LOG_COMPACT_INTERVAL_S"}


_DEFAULTS = PredictionLogSpec()  # one source of defaults: the spec's


@dataclass(frozen=True)
class LogSettings:
    """How the server writes and keeps the prediction log (``monitoring.prediction_log``)."""

    mode: str = _DEFAULTS.mode
    retention_days: float | None = _DEFAULTS.retention_days  # None: keep every hour
    max_bytes: int | None = _DEFAULTS.max_bytes  # None: no size bound
    compact_interval_s: float = _DEFAULTS.compact_interval_s  # 0: this server never compacts

    @classmethod
    def from_env(cls, env=None) -> "LogSettings":
        """Settings from ``LOOPML_PREDICTION_LOG_*`` (``loopml serve`` exports loopml.yaml's
        section there, so worker processes inherit it); a bad value is a one-line error."""
        from loopml.errors import ServeError

        env = os.environ if env is None else env
        values: dict = {}
        for key, var in ENV.items():
            raw = env.get(var, "").strip()
            if not raw:
                continue
            try:
                values[key] = raw if key == "mode" else int(raw) if key == "max_bytes" else float(raw)
            except ValueError:
                raise ServeError(f"{var}={raw!r}: not a number") from None
        if values.get("mode", "async") not in MODES:
            raise ServeError(f"{ENV['mode']}={values['mode']!r}: use one of {', '.join(MODES)}")
        return cls(**values)


def export_log_settings(spec: PredictionLogSpec, env=None) -> None:
    """Put loopml.yaml's ``monitoring.prediction_log`` into ``LOOPML_PREDICTION_LOG_*`` where
    the environment does not set a variable already (environment > loopml.yaml > default),
    so the server and its worker processes read one set of settings."""
    env = os.environ if env is None else env
    for key, var in ENV.items():
        value = getattr(spec, key)
        if value is not None and not env.get(var, "").strip():
            env[var] = str(value)


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
                 flush_interval_s: float = 1.0, flush_rows: int = 50_000,
                 settings: LogSettings | None = None) -> None:
        self.remote_url = getattr(root, "remote_url", None)  # read before Path() drops it
        self.root = Path(root)
        self.model = model
        self.max_pending_rows = max_pending_rows
        self.flush_interval_s = flush_interval_s
        self.flush_rows = flush_rows
        self.settings = settings  # None: LogSettings.from_env() at start()
        self.dropped = 0  # batches refused or failed before reaching the writer
        self.recorded = 0
        self.compactions = 0
        self.compaction_errors = 0
        self.publisher: Any = None  # remote home: loopml.monitor.outbox.Publisher
        self.writer: Any = None
        self._started = time.time()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: deque[tuple[int, int, asyncio.Future]] = deque()  # (target seq, mark, future)
        self._stop = threading.Event()
        self._compactor: threading.Thread | None = None

    @property
    def acknowledged(self) -> bool:
        return self.settings is not None and self.settings.mode == "acknowledged"

    def start(self) -> "PredictionRecorder":
        from loopml.monitor.predlog import PredictionLogWriter

        if self.writer is None:
            import pyarrow.parquet  # noqa: F401 - pay the first write's imports now, not mid-traffic

            if self.settings is None:
                self.settings = LogSettings.from_env()
            self.writer = PredictionLogWriter(self.root, self.model, flush_rows=self.flush_rows,
                                              flush_interval_s=self.flush_interval_s,
                                              max_queue_rows=self.max_pending_rows,
                                              acknowledged=self.acknowledged,
                                              on_commit=self._committed if self.acknowledged else None).start()
            if self.remote_url:
                from loopml.monitor.outbox import Publisher

                self.publisher = Publisher(self.root, self.model, self.remote_url,
                                           compact_every=self.settings.compact_interval_s).start()
            elif self.settings.compact_interval_s > 0:
                self._stop.clear()
                self._compactor = threading.Thread(target=self._compact_loop, daemon=True,
                                                   name=f"predlog-compact-{self.model}")
                self._compactor.start()
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
            w.lost()  # an acknowledged answer waiting on this batch must not say it was logged
            return
        if ok:
            self.recorded += n

    # -- acknowledged mode --------------------------------------------------------------------

    def log_mark(self) -> int | None:
        """Before a request is predicted: the writer's sequence number, or None when answers
        need not wait (async mode, no log)."""
        w = self.writer
        return w.seq if w is not None and w.acknowledged else None

    async def durable(self, mark: int) -> None:
        """Wait until every batch appended since ``mark`` (the request's own among them) is
        fsynced; :class:`PredictionNotLogged` when one of them was refused or failed."""
        w = self.writer
        target = w.seq
        if w.durable_seq < target:
            self._loop = asyncio.get_running_loop()
            fut = self._loop.create_future()
            self._waiters.append((target, mark, fut))
            if w.durable_seq >= target:  # committed while we registered: the callback may have run
                self._release()
            await fut
        if w.failed_between(mark, target):
            raise PredictionNotLogged(self.model)

    def _committed(self, upto: int) -> None:  # writer thread
        loop = self._loop
        if loop is not None and self._waiters:
            try:
                loop.call_soon_threadsafe(self._release)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    def _release(self) -> None:
        done = self.writer.durable_seq if self.writer is not None else float("inf")
        while self._waiters and self._waiters[0][0] <= done:
            _, _, fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    # -- compaction -------------------------------------------------------------------------

    def compact_now(self):
        """One compaction round of this model's log (skipped when another process holds the lock)."""
        from loopml.monitor.compaction import compact_log

        s = self.settings or LogSettings()
        return compact_log(self.root, self.model,
                           retention_s=None if s.retention_days is None else s.retention_days * 86400.0,
                           max_bytes=s.max_bytes)

    def _compact_loop(self) -> None:
        try:  # compaction is background work: let request threads win the CPU (Linux, per thread)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        while not self._stop.wait(self.settings.compact_interval_s):
            try:
                if self.compact_now() is not None:
                    self.compactions += 1
            except Exception as e:  # noqa: BLE001 - a failed round is retried at the next one
                self.compaction_errors += 1
                log.warning("%s: prediction log compaction failed: %s: %s", self.model, type(e).__name__, e)

    @property
    def lag_seconds(self) -> float:
        """Seconds since the log last caught up, 0 when nothing waits."""
        w = self.writer
        if w is None or not w.pending:
            return 0.0
        last = w.last_write_ts or self._started
        return max(0.0, time.time() - last)

    def close(self) -> None:
        """Write everything queued (fsynced), stop the writer and the compaction thread."""
        self._stop.set()
        if self.publisher is not None:
            self.publisher.stop()
        if self._compactor is not None:
            self._compactor.join(60)
            self._compactor = None
        if self.writer is not None:
            self.writer.close()
        if self.publisher is not None:
            self.publisher.flush()


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

    def log_mark(self) -> int | None:
        """See :meth:`PredictionRecorder.log_mark`; None without a recorder."""
        return None if self.recorder is None else self.recorder.log_mark()

    async def durable(self, mark: int) -> None:
        await self.recorder.durable(mark)
