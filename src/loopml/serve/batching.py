"""Adaptive micro-batching: a :class:`Predictor` wrapper that coalesces concurrent requests.

Requests queue per model; one worker task takes everything queued (up to
``max_batch_size`` rows), predicts once, and splits the result back, so each request
gets exactly the rows it sent. While one batch is predicting the next one fills up,
which is what makes batching adaptive: under light load a request waits for nobody,
under heavy load batches grow by themselves. ``max_delay_ms`` only adds waiting when
recent arrivals say another request is due before the delay runs out.

The queue is bounded: when it holds ``max_queue_rows`` rows, ``predict`` raises
:class:`~loopml.errors.Overloaded` at once (503 + Retry-After) instead of letting
latency grow. A failing batch is retried request by request so that one bad input
fails only its own request. A request whose deadline has passed, or whose client has gone
(``gone()`` says so), is dropped when its batch is taken, before the model sees it.

The limits have no defaults here: they are the ``serving`` settings (ServingSpec), passed
in by :class:`~loopml.serve.endpoint.Deployment`.

The worker is supervised: an exception outside the model call (merging rows, the metrics
callback, a bug in the loop itself) fails only the requests it had taken, with
:class:`~loopml.errors.BatchFailed` (503), and the next request is served by a restarted
worker. Without this one exception would leave every later request waiting forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from itertools import chain

from loopml.errors import BatchFailed, ClientGone, DeadlineExceeded, InvalidInput, LoopmlError, Overloaded
from loopml.serve.runtime import Prediction, Predictor, Rows

log = logging.getLogger("loopml.serve")


def merge_rows(parts: list[Rows]) -> Rows:
    """Concatenate requests column by column (the columns every part shares)."""
    if len(parts) == 1:
        return parts[0]
    names = parts[0].columns.keys()
    columns = {c: list(chain.from_iterable(p.columns[c] for p in parts)) for c in names}
    ids = None
    if any(p.ids for p in parts):
        ids = list(chain.from_iterable(p.ids or [None] * p.n for p in parts))
    return Rows(columns, sum(p.n for p in parts), ids, parts[0].layout)  # layout: see Rows


class _Item:
    __slots__ = ("rows", "future", "deadline", "gone")

    def __init__(self, rows: Rows, future: asyncio.Future, deadline: float | None, gone) -> None:
        self.rows = rows
        self.future = future
        self.deadline = deadline
        self.gone = gone


class Batcher:
    """Wraps ``inner`` (same ``predict(rows)`` signature) with a bounded, batching queue."""

    def __init__(self, inner: Predictor, *, max_batch_size: int, max_delay_ms: float, max_queue_rows: int,
                 name: str = "model", on_batch=None) -> None:
        self.inner = inner
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay_ms / 1000.0
        self.max_queue_rows = max_queue_rows
        self.name = name
        self.on_batch = on_batch  # callback(batch_rows) for metrics
        self.queued_rows = 0
        self.busy = False
        self._queue: deque[_Item] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._gap = 1.0  # EWMA of seconds between arrivals
        self._last_arrival = 0.0
        self._closed = False

    @property
    def idle(self) -> bool:
        return not self._queue and not self.busy

    async def predict(self, rows: Rows, deadline: float | None = None, gone=None) -> Prediction:
        """Queue ``rows`` and wait for their prediction. ``deadline`` is a monotonic time;
        ``gone()``, when given, is true once the client has disconnected."""
        if self._closed:
            raise Overloaded(self.name)
        if self.queued_rows + rows.n > self.max_queue_rows and self.queued_rows > 0:
            raise Overloaded(self.name)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():  # first request, or the worker died: (re)start it
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name=f"batcher-{self.name}")
            self._task.add_done_callback(self._worker_done)
        now = time.monotonic()
        self._gap = 0.8 * self._gap + 0.2 * min(now - self._last_arrival, 1.0)
        self._last_arrival = now
        fut = loop.create_future()
        self._queue.append(_Item(rows, fut, deadline, gone))
        self.queued_rows += rows.n
        self._wake.set()
        if deadline is None:
            return await fut
        # one timer, not asyncio.wait_for (a wrapper per request): every request has a deadline
        budget = max(0.0, deadline - now)
        timer = loop.call_later(budget, _resolve, fut, None, DeadlineExceeded(budget * 1000.0))
        try:
            return await fut
        finally:
            timer.cancel()

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._gather_more()
            batch = self._take_batch()
            if batch:
                self.busy = True
                try:
                    await self._predict_batch(batch)
                except Exception as e:  # noqa: BLE001 - supervise: fail this batch, keep serving
                    log.exception("%s: batch of %d request(s) failed outside the model", self.name, len(batch))
                    error = BatchFailed(self.name, f"{type(e).__name__}: {e}")
                    for it in batch:
                        _resolve(it.future, error=error)
                finally:
                    self.busy = False

    def _worker_done(self, task: asyncio.Task) -> None:
        """The worker ended: fail whatever it left queued (nobody else would answer it); the
        next :meth:`predict` starts a new worker."""
        if task.cancelled() or task.exception() is None:
            reason = "stopped"
        else:
            e = task.exception()
            log.error("%s: batching worker died: %s: %s", self.name, type(e).__name__, e)
            reason = f"{type(e).__name__}: {e}"
        if self._closed and not self._queue:
            return
        error = BatchFailed(self.name, reason)
        while self._queue:
            item = self._queue.popleft()
            self.queued_rows -= item.rows.n
            _resolve(item.future, error=error)
        self.busy = False

    async def _gather_more(self) -> None:
        """Wait for more rows while they keep arriving: after each arrival, at most twice the
        recent mean gap for the next one, and never past ``max_delay`` from the start."""
        if self.max_delay <= 0:
            return
        until = time.monotonic() + self.max_delay
        while self.queued_rows < self.max_batch_size and not self._closed:
            now = time.monotonic()
            wait = min(until - now, max(2.0 * self._gap, 20e-6))
            if wait <= 0 or self._last_arrival + self._gap > until:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except asyncio.TimeoutError:
                return

    def _take_batch(self) -> list[_Item]:
        batch: list[_Item] = []
        rows = 0
        now = time.monotonic()
        while self._queue:
            item = self._queue[0]
            if batch and rows + item.rows.n > self.max_batch_size:
                break
            self._queue.popleft()
            self.queued_rows -= item.rows.n
            if item.future.done():  # its deadline ran out while queued
                continue
            if item.deadline is not None and item.deadline <= now:
                item.future.set_exception(DeadlineExceeded(0))
                continue
            if item.gone is not None and item.gone():  # nobody would read the answer
                item.future.set_exception(ClientGone())
                continue
            batch.append(item)
            rows += item.rows.n
        return batch

    async def _predict_batch(self, batch: list[_Item]) -> None:
        merged = merge_rows([it.rows for it in batch])  # a failure here is ours, not the client's: _run fails the batch
        try:
            pred = await self.inner.predict(merged)
        except Exception as e:  # noqa: BLE001 - isolate the culprit, fail only it
            if len(batch) == 1:
                _resolve(batch[0].future, error=_as_error(e))
                return
            for it in batch:
                try:
                    _resolve(it.future, await self.inner.predict(it.rows))
                except Exception as e1:  # noqa: BLE001
                    _resolve(it.future, error=_as_error(e1))
            return
        start = 0
        for it in batch:
            stop = start + it.rows.n
            _resolve(it.future, pred.slice(start, stop) if len(batch) > 1 else pred)
            start = stop
        if self.on_batch is not None:
            try:  # metrics are not the answer: a failing callback never fails a prediction
                self.on_batch(start)
            except Exception:  # noqa: BLE001
                log.exception("%s: batch metrics callback failed", self.name)

    async def drain(self, timeout: float = 30.0) -> bool:
        """Wait until nothing is queued or predicting; True when drained in time."""
        end = time.monotonic() + timeout
        while not self.idle:
            if time.monotonic() >= end:
                return False
            await asyncio.sleep(0.005)
        return True

    async def close(self, timeout: float = 30.0) -> None:
        """Stop accepting, finish what is queued, stop the worker task."""
        await self.drain(timeout)
        self._closed = True
        if self._task is not None:
            self._wake.set()
            try:
                await asyncio.wait_for(self._task, timeout)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            self._task = None


def _as_error(e: BaseException) -> BaseException:
    if isinstance(e, LoopmlError):
        return e
    return InvalidInput(f"prediction failed: {type(e).__name__}: {e}")


def _resolve(fut: asyncio.Future, value=None, error: BaseException | None = None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)
