"""Hot swap under load (zero failed requests) and graceful shutdown (log flushed)."""

from __future__ import annotations

import threading
import time

import httpx

from loopml.monitor.predlog import read_predictions
from tests.serve.helpers import wait_for as _wait_for

ROW = {"instances": [[1.0, 2.0, 3.0, 4.0]]}  # v1 (clf) says 1, v2 (clf_flip) says 0


def hammer(url: str, stop: threading.Event, out: list, n_threads: int = 6) -> list[threading.Thread]:
    def loop():
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post("/invocations", json=ROW)
                    out.append((time.monotonic(), r.status_code, r.headers.get("x-loopml-model-version"),
                                r.json().get("predictions", [None])[0] if r.status_code == 200 else r.text))
                except httpx.HTTPError as e:  # a connection error is a failed request too
                    out.append((time.monotonic(), 0, None, repr(e)))

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(n_threads)]
    for t in threads:
        t.start()
    return threads


def wait_for(pred, timeout=20.0):
    return _wait_for(pred, timeout, interval=0.02)


def test_promotion_is_picked_up_by_polling_with_zero_failures(make_server, fake_registry):
    server = make_server(endpoints=("clf",), poll_interval_s=0.1)
    results: list = []
    stop = threading.Event()
    threads = hammer(server.url, stop, results)
    assert wait_for(lambda: len(results) > 200)
    fake_registry.set_alias("clf", "champion", "2")
    promoted = time.monotonic()
    assert wait_for(lambda: any(v == "2" for _, _, v, _ in results[-50:]))
    n = len(results)
    assert wait_for(lambda: len(results) > n + 200)
    stop.set()
    for t in threads:
        t.join(10)
    failures = [r for r in results if r[1] != 200]
    assert failures == []
    versions = {v for _, _, v, _ in results}
    assert versions == {"1", "2"}
    # every answer came whole from one version
    assert all((v, p) in {("1", 1), ("2", 0)} for _, _, v, p in results)
    # once v2 answered, v1 never answered again
    first_v2 = min(t for t, _, v, _ in results if v == "2")
    assert first_v2 >= promoted
    assert all(v == "2" for t, _, v, _ in results if t > first_v2 + 0.5)


def test_admin_reload_swaps_without_polling(make_server, fake_registry):
    server = make_server(endpoints=("clf",), poll_interval_s=0, admin_token="t")
    fake_registry.set_alias("clf", "champion", "2")
    time.sleep(0.3)
    r = httpx.post(server.url + "/invocations", json=ROW)
    assert r.headers["x-loopml-model-version"] == "1"  # no polling: nothing moved yet
    results: list = []
    stop = threading.Event()
    threads = hammer(server.url, stop, results, n_threads=4)
    assert wait_for(lambda: len(results) > 100)
    reload = httpx.post(server.url + "/admin/reload", headers={"authorization": "Bearer t"}, timeout=30)
    assert reload.status_code == 200 and reload.json()["models"]["clf"]["primary"]["version"] == "2"
    n = len(results)
    assert wait_for(lambda: len(results) > n + 100)
    stop.set()
    for t in threads:
        t.join(10)
    assert [r for r in results if r[1] != 200] == []
    assert results[-1][2] == "2"
    assert httpx.get(server.url + "/v2/models/clf").json()["versions"] == ["2"]


def test_graceful_stop_finishes_requests_and_flushes_the_log(make_server, workspace):
    server = make_server(endpoints=("clf",))
    results: list = []
    stop = threading.Event()
    threads = hammer(server.url, stop, results, n_threads=4)
    assert wait_for(lambda: len(results) > 300)
    server.stop()  # while clients are still sending
    stop.set()
    for t in threads:
        t.join(10)
    ok = [r for r in results if r[1] == 200]
    log = read_predictions(workspace.predictions, "clf")
    # nothing acknowledged is lost: every 200 answer is in the log, with its variant and version
    assert len(log) == len(ok)
    assert set(log["variant"]) == {"champion"} and set(log["version"]) == {"1"}
    assert list(log.columns[:5]) == ["request_id", "ts", "model", "version", "variant"]
    assert {"in.f0", "in.f3", "out.prediction", "out.proba"} <= set(log.columns)
    assert log["out.proba"].between(0, 1).all()
