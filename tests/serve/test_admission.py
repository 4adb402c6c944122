"""Admission control (serve/admission.py + app.py): the in-flight bound per model answers 503 +
Retry-After before the body is read, the default deadline answers 504, a request whose client
has gone is dropped before the model sees it; all counted on /metrics. Real server, real
sockets, a model that is slow on purpose."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
from sklearn.linear_model import LogisticRegression

from loopml.serve.admission import Admission
from loopml.errors import Overloaded
from tests.serve.conftest import FEATURES, NUM_SIG, numeric_frame
from tests.serve.helpers import wait_for

ROW = {"dataframe_split": {"columns": FEATURES, "data": [[0.1, 0.2, 0.3, 0.4]]}}


class SlowLR(LogisticRegression):
    """A classifier whose every predict call takes ``delay`` seconds and is counted."""

    delay = 0.0
    calls = 0

    def predict_proba(self, X):
        type(self).calls += 1
        time.sleep(type(self).delay)
        return super().predict_proba(X)


@pytest.fixture
def slow(make_server, fake_registry):
    X = numeric_frame(200, 3)
    model = SlowLR().fit(X, (X["f0"] > 0).astype(int))
    fake_registry.add("slow", model, NUM_SIG, "champion")
    SlowLR.calls, SlowLR.delay = 0, 0.0
    made = {}

    def make(**settings):
        # compiled=False: the NumPy fast path would skip SlowLR.predict_proba; predict_in_thread:
        # the event loop stays free while the model sleeps, as it is with a challenger loaded
        made["server"] = server = make_server(("slow",), compiled=False, max_batch_size=1, predict_in_thread="always",
                                              **settings)
        SlowLR.calls = 0  # the load-time smoke prediction does not count
        return server

    yield make
    SlowLR.delay = 0.0  # let any request still queued finish quickly at teardown


def _hold(url: str, results: list) -> threading.Thread:
    """One request in a thread (it occupies the model for SlowLR.delay seconds)."""
    def go():
        results.append(httpx.post(url + "/invocations", json=ROW, timeout=30).status_code)
    t = threading.Thread(target=go)
    t.start()
    return t


def _metric(url: str, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0 if want else float("nan")


def test_past_max_inflight_a_request_is_refused_before_its_body_is_read(slow):
    server = slow(max_inflight=1)
    SlowLR.delay = 0.5
    results: list = []
    holder = _hold(server.url, results)
    assert wait_for(lambda: server.app.admission.inflight["slow"] == 1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        # headers announcing a body that is never sent: the answer cannot depend on it
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n")
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in head.lower(), head
    holder.join()
    assert results == [200]
    assert _metric(server.url, "loopml_shed_requests_total", model="slow", reason="inflight") == 1
    # the bound frees up: the next request is served
    assert httpx.post(server.url + "/invocations", json=ROW).status_code == 200


def test_inflight_per_model_is_on_metrics(slow):
    server = slow(max_inflight=4)
    SlowLR.delay = 0.5
    results: list = []
    holder = _hold(server.url, results)
    assert wait_for(lambda: _metric(server.url, "loopml_model_inflight_requests", model="slow") == 1)
    holder.join()
    assert _metric(server.url, "loopml_model_inflight_requests", model="slow") == 0


def test_default_deadline_is_504_and_the_header_still_wins(slow):
    server = slow(deadline_ms=100)
    SlowLR.delay = 0.4
    results: list = []
    holder = _hold(server.url, results)  # occupies the model well past 100 ms
    assert wait_for(lambda: server.app.admission.inflight["slow"] == 1)
    late = httpx.post(server.url + "/invocations", json=ROW, timeout=30)
    assert late.status_code == 504 and "deadline" in late.json()["error"]
    assert results == [504] or (holder.join() or results == [504])  # the holder too waited past 100 ms
    SlowLR.delay = 0.2
    ok = httpx.post(server.url + "/invocations", json=ROW, headers={"x-loopml-deadline-ms": "20000"}, timeout=30)
    assert ok.status_code == 200
    assert _metric(server.url, "loopml_shed_requests_total", model="slow", reason="deadline") >= 1


def test_a_request_whose_client_disconnected_is_never_predicted(slow):
    server = slow(max_inflight=8)
    SlowLR.delay = 0.5
    results: list = []
    holder = _hold(server.url, results)
    assert wait_for(lambda: SlowLR.calls == 1)  # the holder is predicting; the next request queues
    body = httpx.Request("POST", "http://x/invocations", json=ROW).read()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert wait_for(lambda: server.app.admission.inflight["slow"] == 2)
    s.close()  # gone while queued behind the holder
    holder.join()
    assert wait_for(lambda: _metric(server.url, "loopml_shed_requests_total", model="slow", reason="client_gone") == 1)
    assert SlowLR.calls == 1  # only the holder's rows reached the model
    assert results == [200]


def test_admission_unit_bound_and_release():
    adm = Admission(2)
    adm.enter("m")
    adm.enter("m")
    with pytest.raises(Overloaded) as info:
        adm.enter("m")
    assert info.value.http_status == 503 and info.value.retry_after == 1
    adm.enter("other")  # per model
    adm.leave("m")
    adm.enter("m")
    assert adm.dropped[("m", "inflight")] == 1
    unbounded = Admission(0)
    for _ in range(10_000):
        unbounded.enter("m")
