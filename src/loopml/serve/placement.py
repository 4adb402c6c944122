"""Where a model predicts: inline on the event loop, or in a thread of its own.

Inline costs nothing extra per batch but holds the event loop for the whole predict call:
meanwhile nothing else is answered, 503s and health probes included (issue #9: a 64-row batch
of a gradient-boosted model takes tens of ms, and 503s waited 64-174 ms behind it). A thread
leaves the loop free but costs a hop per batch (submit, wake the worker, hand the result back
with ``call_soon_threadsafe``: tens of µs, more on a busy machine), which is more than the
whole predict of the compiled linear fast path.

``serving.predict_in_thread`` says which: ``always``, ``never``, or ``auto`` (the default):
each version is timed at load on a full batch (``max_batch_size`` rows made from its smoke
rows, the longest the loop would be held; the best of a few runs, so a busy machine does not
inflate it) and predicts in a thread when that batch took more than :data:`THREAD_ABOVE_S`.
Whatever the setting, while a challenger is loaded both variants predict in threads (a slow
challenger must not block the champion, and the two are timed alike for the rollout).
"""

from __future__ import annotations

import math
import time
from typing import Any

from prometheus_client.core import GaugeMetricFamily

# A batch slower than this holds the loop long enough to be worth a thread. Not the hop's cost
# at rest (25-77 us) but its cost under load: the predict thread must win the GIL back from a
# loop busy answering, up to a switch interval (0.5 ms as loopml serve sets it) each way. At
# 200 us the loopml new model (ONNX, 0.4-0.8 ms a batch) went to a thread and, in two
# overload runs, answered 200s at 41-84% of the rate it had inline, its 503s no faster
# (docs/reliability.md, Overload).
THREAD_ABOVE_S = 2e-3
TIMING_RUNS = 5


def time_batch(runtime: Any, rows_wanted: int) -> tuple[int, float | None]:
    """(rows, best seconds of :data:`TIMING_RUNS` predicts) on a batch of about ``rows_wanted``
    rows made by repeating the runtime's smoke rows; the smoke rows alone when they cannot be
    repeated (a layout merge does not take); seconds None when even they fail (then the
    model is not known to be fast and ``auto`` puts it in a thread)."""
    from loopml.serve.batching import merge_rows

    try:
        rows, _ = runtime.smoke_rows()
    except Exception:  # noqa: BLE001 - load checked it already; unknown cost: be safe
        return 0, None
    batch = rows
    if 0 < rows.n < rows_wanted:
        try:
            batch = merge_rows([rows] * math.ceil(rows_wanted / rows.n))
            runtime.predict_sync(batch)
        except Exception:  # noqa: BLE001 - time what the smoke check already predicted
            batch = rows
    best = None
    try:
        runtime.predict_sync(batch)  # warm-up: first-call costs are not the steady state
        for _ in range(TIMING_RUNS):
            t0 = time.perf_counter()
            runtime.predict_sync(batch)
            took = time.perf_counter() - t0
            best = took if best is None else min(best, took)
    except Exception:  # noqa: BLE001
        return batch.n, None
    return batch.n, best


def decide(mode: str, batch_rows: int | None, batch_seconds: float | None, challenger: bool) -> tuple[bool, str]:
    """(predict in a thread?, why) for one deployment."""
    if challenger:
        return True, "a challenger is loaded: both variants predict in threads"
    if mode == "always":
        return True, "serving.predict_in_thread: always"
    if mode == "never":
        return False, "serving.predict_in_thread: never"
    if batch_seconds is None:
        return True, "auto: its batch could not be timed"
    us, limit = batch_seconds * 1e6, THREAD_ABOVE_S * 1e6
    if batch_seconds > THREAD_ABOVE_S:
        return True, f"auto: a {batch_rows}-row batch took {us:.0f} us > {limit:.0f} us"
    return False, f"auto: a {batch_rows}-row batch took {us:.0f} us <= {limit:.0f} us"


class PlacementCollector:
    """``/metrics`` gauges read from the fleet at scrape time: where each version predicts, and
    the batch time that decided it."""

    def __init__(self, fleet: Any) -> None:
        self.fleet = fleet

    def describe(self):
        return []

    def collect(self):
        where = GaugeMetricFamily("loopml_model_predict_in_thread", "1 when a model version predicts in a thread, "
                                  "0 when inline on the event loop (serving.predict_in_thread).",
                                  labels=["model", "version", "variant"])
        took = GaugeMetricFamily("loopml_model_batch_predict_seconds", "Best time of a full batch at load, "
                                 "what predict_in_thread: auto decides on.", labels=["model", "version"])
        for ep in list(self.fleet.endpoints.values()):
            for d in ep.deployments():
                where.add_metric([ep.name, d.version, d.label], 1 if d.in_thread else 0)
                if d.batch_seconds is not None:
                    took.add_metric([ep.name, d.version], d.batch_seconds)
        yield where
        yield took
