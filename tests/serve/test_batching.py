"""Micro-batching: results identical to unbatched prediction, bounded queue, deadlines."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopml.errors import DeadlineExceeded, InvalidInput, LoopmlError, Overloaded
from loopml.serve.batching import Batcher, merge_rows
from loopml.serve.runtime import ModelRuntime, Rows
from tests.serve.conftest import FEATURES, NUM_SIG, FakeRegistry, clf_model

_REG = FakeRegistry()
_REG.add("clf", clf_model(), NUM_SIG, "champion")
RUNTIME = ModelRuntime(_REG, _REG.resolve("clf")).load()


def batcher_of(inner, **kw) -> Batcher:
    """A Batcher with the serving defaults (ServeSettings) for whatever ``kw`` leaves out: the
    batcher itself has no defaults of its own."""
    from loopml.serve.settings import ServeSettings

    d = ServeSettings()
    return Batcher(inner, **{"max_batch_size": d.max_batch_size, "max_delay_ms": d.max_delay_ms,
                             "max_queue_rows": d.max_queue_rows, **kw})

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
request = st.integers(1, 6).flatmap(lambda n: st.lists(st.lists(finite, min_size=4, max_size=4), min_size=n, max_size=n))


def to_rows(rows: list[list[float]]) -> Rows:
    return Rows({f: [r[j] for r in rows] for j, f in enumerate(FEATURES)}, len(rows))


class CountingPredictor:
    def __init__(self, inner):
        self.inner = inner
        self.calls: list[int] = []

    async def predict(self, rows):
        self.calls.append(rows.n)
        await asyncio.sleep(0)
        return await self.inner.predict(rows)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=st.lists(request, min_size=1, max_size=12), max_batch=st.integers(1, 20),
       delay=st.sampled_from([0.0, 0.5, 2.0]))
def test_batched_equals_unbatched(requests, max_batch, delay):
    counting = CountingPredictor(RUNTIME)
    batcher = batcher_of(counting, max_batch_size=max_batch, max_delay_ms=delay, max_queue_rows=10_000)

    async def go():
        out = await asyncio.gather(*(batcher.predict(to_rows(r)) for r in requests))
        await batcher.close()
        return out

    results = asyncio.run(go())
    for rows, got in zip(requests, results):
        want = RUNTIME.predict_sync(to_rows(rows))
        assert np.array_equal(got.predict, want.predict)
        assert np.allclose(got.proba, want.proba, rtol=1e-12, atol=1e-15)
    assert sum(counting.calls) == sum(len(r) for r in requests)
    # a batch never exceeds max_batch_size unless one request alone is bigger
    assert all(n <= max(max_batch, 6) for n in counting.calls)


def test_concurrent_requests_are_coalesced():
    counting = CountingPredictor(RUNTIME)
    batcher = batcher_of(counting, max_batch_size=64, max_delay_ms=0)

    async def go():
        await asyncio.gather(*(batcher.predict(to_rows([[1.0, 2.0, 3.0, 4.0]])) for _ in range(20)))
        await batcher.close()

    asyncio.run(go())
    assert len(counting.calls) < 20 and sum(counting.calls) == 20


def test_a_bad_request_fails_alone():
    batcher = batcher_of(RUNTIME, max_batch_size=64, max_delay_ms=5)
    good = to_rows([[1.0, 2.0, 3.0, 4.0]])
    bad = Rows({f: ["oops"] for f in FEATURES}, 1)

    async def go():
        out = await asyncio.gather(batcher.predict(good), batcher.predict(bad), batcher.predict(good),
                                   return_exceptions=True)
        await batcher.close()
        return out

    a, b, c = asyncio.run(go())
    assert isinstance(b, InvalidInput)
    assert a.predict.tolist() == c.predict.tolist() == RUNTIME.predict_sync(good).predict.tolist()


class SlowPredictor:
    def __init__(self, inner, seconds):
        self.inner, self.seconds = inner, seconds

    async def predict(self, rows):
        await asyncio.sleep(self.seconds)
        return await self.inner.predict(rows)


def test_full_queue_is_rejected_at_once_and_deadlines_expire():
    batcher = batcher_of(SlowPredictor(RUNTIME, 0.2), max_batch_size=1, max_delay_ms=0, max_queue_rows=2)
    one = to_rows([[1.0, 2.0, 3.0, 4.0]])

    async def go():
        import time

        first = asyncio.ensure_future(batcher.predict(one))
        await asyncio.sleep(0.01)  # first is predicting; the queue is empty again
        queued = [asyncio.ensure_future(batcher.predict(one)) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await batcher.predict(one)
        with pytest.raises(DeadlineExceeded):
            await batcher_of(SlowPredictor(RUNTIME, 0.5), max_delay_ms=0).predict(one, time.monotonic() + 0.05)
        await asyncio.gather(first, *queued)
        await batcher.close()

    asyncio.run(go())


def test_merge_rows_keeps_order_and_ids():
    a = Rows({"x": [1, 2]}, 2, ["a0", "a1"])
    b = Rows({"x": [3]}, 1, None)
    m = merge_rows([a, b])
    assert m.columns == {"x": [1, 2, 3]} and m.n == 3 and m.ids == ["a0", "a1", None]


def _rows1() -> Rows:
    return to_rows([[0.1, 0.2, 0.3, 0.4]])


def test_a_crash_in_on_batch_fails_its_requests_and_the_next_request_is_answered():
    crash = {"on": True}

    def on_batch(n):
        if crash["on"]:
            raise RuntimeError("metrics backend exploded")

    batcher = batcher_of(RUNTIME, max_batch_size=8, max_delay_ms=0.0, on_batch=on_batch, name="clf")

    async def go():
        # bounded waits: on a dead worker these would hang forever, so time out and fail
        first = await asyncio.wait_for(asyncio.gather(batcher.predict(_rows1()), return_exceptions=True), 5)
        crash["on"] = False
        second = await asyncio.wait_for(batcher.predict(_rows1()), 5)
        await batcher.close()
        return first[0], second

    first, second = asyncio.run(go())
    # the metrics callback is not the prediction: the answer stands, or fails with a clear 5xx error
    assert not isinstance(first, Exception) or (isinstance(first, LoopmlError) and first.http_status >= 500)
    assert second.predict.shape == (1,)


def test_a_crash_in_merge_rows_fails_only_the_affected_requests_and_the_worker_restarts(monkeypatch):
    from loopml.serve import batching

    real_merge = batching.merge_rows
    crash = {"on": True}

    def bad_merge(parts):
        if crash["on"]:
            raise KeyError("f9")
        return real_merge(parts)

    monkeypatch.setattr(batching, "merge_rows", bad_merge)
    batcher = batcher_of(RUNTIME, max_batch_size=8, max_delay_ms=0.0, name="clf")

    async def go():
        failed = await asyncio.wait_for(asyncio.gather(batcher.predict(_rows1()), return_exceptions=True), 5)
        crash["on"] = False
        answered = await asyncio.wait_for(batcher.predict(_rows1()), 5)
        await batcher.close()
        return failed[0], answered

    failed, answered = asyncio.run(go())
    assert isinstance(failed, LoopmlError) and failed.http_status in (500, 503)
    assert "clf" in str(failed) and "KeyError" in str(failed)
    assert answered.predict.shape == (1,)


def test_a_dead_worker_task_fails_what_is_queued_and_is_restarted(monkeypatch):
    batcher = batcher_of(RUNTIME, max_batch_size=8, max_delay_ms=0.0, name="clf")
    real_take = batcher._take_batch
    crash = {"on": True}

    def bad_take():
        if crash["on"]:
            crash["on"] = False
            raise RuntimeError("worker bug")
        return real_take()

    monkeypatch.setattr(batcher, "_take_batch", bad_take)

    async def go():
        failed = await asyncio.wait_for(asyncio.gather(batcher.predict(_rows1()), return_exceptions=True), 5)
        answered = await asyncio.wait_for(batcher.predict(_rows1()), 5)
        await batcher.close()
        return failed[0], answered

    failed, answered = asyncio.run(go())
    assert isinstance(failed, LoopmlError) and failed.http_status in (500, 503)
    assert answered.predict.shape == (1,)


def test_the_batcher_has_no_defaults_of_its_own():
    """One source of defaults (ServingSpec): a Batcher built without its limits is a mistake."""
    with pytest.raises(TypeError):
        Batcher(RUNTIME)


def test_a_request_whose_client_has_gone_is_dropped_unpredicted():
    from loopml.errors import ClientGone

    counting = CountingPredictor(SlowPredictor(RUNTIME, 0.05))
    batcher = batcher_of(counting, max_batch_size=1, max_delay_ms=0)
    one = to_rows([[1.0, 2.0, 3.0, 4.0]])
    gone = {"flag": False}

    async def go():
        first = asyncio.ensure_future(batcher.predict(one))
        await asyncio.sleep(0.01)  # first is predicting; the next two wait in the queue
        left = asyncio.ensure_future(batcher.predict(one, None, lambda: gone["flag"]))
        stays = asyncio.ensure_future(batcher.predict(one, None, lambda: False))
        gone["flag"] = True  # its client disconnects while it waits
        results = await asyncio.gather(first, left, stays, return_exceptions=True)
        await batcher.close()
        return results

    first, left, stays = asyncio.run(go())
    assert isinstance(left, ClientGone) and not isinstance(first, Exception) and not isinstance(stays, Exception)
    assert counting.calls == [1, 1]  # the model never saw the gone client's rows
