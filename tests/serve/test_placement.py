"""serve/placement.py + fleet: ``serving.predict_in_thread`` (auto, always, never) decides per
loaded version whether batches predict in a thread or inline on the event loop; the choice
shows in the admin API, OIP model metadata and /metrics; with the model in a thread the
event loop answers while a batch predicts. Real servers on 127.0.0.1."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from sklearn.linear_model import LogisticRegression

from loopml.serve.placement import THREAD_ABOVE_S, decide, time_batch
from loopml.serve.runtime import Rows
from tests.serve.conftest import FEATURES, NUM_SIG, numeric_frame

ROW = {"dataframe_split": {"columns": FEATURES, "data": [[0.1, 0.2, 0.3, 0.4]]}}


class SlowLR(LogisticRegression):
    """A classifier whose every predict call sleeps ``delay`` seconds (class-level, so a test
    can make it slow after load)."""

    delay = 0.0
    active = 0  # predict calls sleeping now

    def predict_proba(self, X):
        type(self).active += 1
        try:
            time.sleep(type(self).delay)
        finally:
            type(self).active -= 1
        return super().predict_proba(X)


@pytest.fixture
def slow_registry(fake_registry):
    X = numeric_frame(200, 3)
    fake_registry.add("slow", SlowLR().fit(X, (X["f0"] > 0).astype(int)), NUM_SIG, "champion")
    SlowLR.delay = 0.01  # at load: its batch takes > 2 ms whatever the machine
    yield fake_registry
    SlowLR.delay = 0.0


def _describe(server, name: str) -> dict:
    return server.app.fleet.endpoints[name].describe()["primary"]


def _metric(url: str, name: str, **labels) -> float | None:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_decide_by_mode_batch_time_and_challenger():
    slow, fast = THREAD_ABOVE_S * 10, THREAD_ABOVE_S / 10
    assert decide("auto", 64, slow, False)[0] is True
    assert decide("auto", 64, fast, False)[0] is False
    assert decide("auto", 64, None, False)[0] is True  # not known to be fast: off the loop
    assert decide("never", 64, slow, False)[0] is False
    assert decide("always", 64, fast, False)[0] is True
    for mode in ("auto", "always", "never"):  # a challenger: both variants in threads
        assert decide(mode, 64, fast, True)[0] is True
    assert "64-row batch" in decide("auto", 64, slow, False)[1]


def test_time_batch_repeats_the_smoke_rows_to_a_full_batch():
    seen = []

    class Runtime:
        def smoke_rows(self):
            return Rows({"a": [1.0], "b": [2.0]}, 1), "a row"

        def predict_sync(self, rows):
            seen.append(rows.n)

    rows, seconds = time_batch(Runtime(), 64)
    assert rows == 64 and seconds is not None and seconds >= 0
    assert set(seen) == {64}


def test_time_batch_of_a_model_that_cannot_predict_is_unknown():
    class Broken:
        def smoke_rows(self):
            return Rows({"a": [1.0]}, 1), "a row"

        def predict_sync(self, rows):
            raise ValueError("no")

    assert time_batch(Broken(), 8)[1] is None


def test_auto_puts_a_slow_model_in_a_thread_and_keeps_the_fast_path_inline(make_server, slow_registry):
    server = make_server(("slow",), compiled=False)  # through sklearn, never compiled
    fast = make_server(("reg",))  # the compiled linear fast path
    slow = _describe(server, "slow")
    assert slow["predicts_in"] == "thread" and slow["placement"].startswith("auto:")
    assert slow["batch_rows"] == 64 and slow["batch_predict_us"] is not None  # measured, shown (no timing asserted)
    reg = _describe(fast, "reg")
    assert reg["predicts_in"] == "event loop", reg
    # the same choice in OIP model metadata and on /metrics
    meta = httpx.get(server.url + "/v2/models/slow").json()
    assert meta["parameters"]["predict_in_thread"] is True
    assert httpx.get(fast.url + "/v2/models/reg").json()["parameters"]["predict_in_thread"] is False
    assert _metric(server.url, "loopml_model_predict_in_thread", model="slow") == 1.0
    assert _metric(fast.url, "loopml_model_predict_in_thread", model="reg") == 0.0
    # the metric carries the same measurement the admin API shows
    assert _metric(server.url, "loopml_model_batch_predict_seconds", model="slow") == \
        pytest.approx(slow["batch_predict_us"] / 1e6, rel=1e-3, abs=1e-6)
    assert httpx.post(server.url + "/invocations", json=ROW, headers={"x-loopml-model": "slow"}).status_code == 200


@pytest.mark.parametrize("mode", ["auto", "never"])
def test_event_loop_answers_while_a_slow_batch_predicts_only_off_the_loop(make_server, slow_registry, mode):
    """With the slow model in a thread (auto) a health probe is answered while a batch is
    predicting; inline (never) the loop can answer it only once the predict call has returned:
    ordering, not timing."""
    server = make_server(("slow",), compiled=False, predict_in_thread=mode)
    assert _describe(server, "slow")["predicts_in"] == ("thread" if mode == "auto" else "event loop")
    SlowLR.delay = 2.0
    t = threading.Thread(target=lambda: httpx.post(server.url + "/invocations", json=ROW, timeout=60))
    t.start()
    try:
        assert _wait(lambda: SlowLR.active == 1)
        live = httpx.get(server.url + "/v2/health/live", timeout=60)
        answered_during_predict = SlowLR.active == 1
        assert live.status_code == 200
        assert answered_during_predict is (mode == "auto")
    finally:
        SlowLR.delay = 0.0
        t.join(60)


def _wait(pred, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.002)
    return pred()


def test_predict_in_thread_setting_from_flag_env_and_spec(monkeypatch):
    from loopml.errors import ServeError
    from loopml.serve.settings import ServeSettings, resolve_serving
    from loopml.spec import ServingSpec

    assert resolve_serving({}, None, env={}).predict_in_thread == "auto"
    assert resolve_serving({}, ServingSpec(predict_in_thread="never"), env={}).predict_in_thread == "never"
    env = {"LOOPML_SERVE_PREDICT_IN_THREAD": "always"}
    assert resolve_serving({}, ServingSpec(predict_in_thread="never"), env=env).predict_in_thread == "always"
    assert resolve_serving({"predict_in_thread": "never"}, None, env=env).predict_in_thread == "never"
    assert ServeSettings.for_serving(resolve_serving({}, None, env=env)).predict_in_thread == "always"
    with pytest.raises(ServeError) as info:
        resolve_serving({"predict_in_thread": "sometimes"}, None, env={})
    assert "--predict-in-thread" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ServeError, match="auto, always, never"):
        ServeSettings(predict_in_thread="sometimes").validate()
