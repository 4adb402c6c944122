"""The fleet never switches in a version that failed its check, keeps every deployment when the
registry cannot be asked, and is ready only when every configured model is loaded and checked."""

from __future__ import annotations

import httpx

from tests.serve.helpers import wait_for
from tests.serve.test_runtime import three_feature_model
from tests.serve.conftest import NUM_SIG

TOKEN = "t0k"
ROW = {"instances": [[1.0, 2.0, 3.0, 4.0]]}  # v1 (clf) says 1, v2 (clf_flip) says 0
AUTH = {"authorization": f"Bearer {TOKEN}"}


def describe(server, name="clf") -> dict:
    return httpx.get(f"{server.url}/admin/models/{name}", headers=AUTH, timeout=30).json()


def test_a_version_that_fails_its_smoke_prediction_is_never_switched_in(make_server, fake_registry):
    server = make_server(endpoints=("clf",), poll_interval_s=0.1, admin_token=TOKEN)
    broken = fake_registry.add("clf", three_feature_model(), NUM_SIG)
    fake_registry.set_alias("clf", "champion", broken)
    assert wait_for(lambda: "failed its check" in (describe(server)["last_error"] or ""))
    d = describe(server)
    assert d["primary"]["version"] == "1" and d["ready"] is True  # the old deployment keeps serving
    r = httpx.post(server.url + "/invocations", json=ROW)
    assert r.status_code == 200 and r.headers["x-loopml-model-version"] == "1"
    r = httpx.post(server.url + "/admin/models/clf/reload", headers=AUTH, timeout=30)
    assert r.status_code == 422 and f"version {broken} failed its check" in r.json()["error"]
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200


def test_registry_unavailable_keeps_every_deployment_including_the_challenger(make_server, fake_registry):
    server = make_server(endpoints=("clf",), poll_interval_s=0.1, admin_token=TOKEN)
    r = httpx.put(server.url + "/admin/models/clf/traffic", json={"kind": "canary", "weight": 0.5}, headers=AUTH,
                  timeout=30)
    assert r.status_code == 200 and r.json()["challenger"]["version"] == "2"
    fake_registry.unavailable = True
    r = httpx.post(server.url + "/admin/models/clf/reload", headers=AUTH, timeout=30)
    assert r.status_code == 503 and "unavailable" in r.json()["error"]
    r = httpx.post(server.url + "/admin/reload", headers=AUTH, timeout=30)
    assert r.status_code == 503 and "error" in r.json()
    assert wait_for(lambda: "unavailable" in (describe(server)["last_error"] or ""))  # the poll failed too
    d = describe(server)
    assert d["primary"]["version"] == "1" and d["challenger"]["version"] == "2"  # nothing retired
    versions = {httpx.post(server.url + "/invocations", json=ROW).headers["x-loopml-model-version"]
                for _ in range(40)}
    assert versions == {"1", "2"}
    fake_registry.unavailable = False
    assert wait_for(lambda: describe(server)["last_error"] is None)
    assert describe(server)["challenger"]["version"] == "2"


def test_not_ready_until_every_model_is_loaded_and_checked(make_server, fake_registry, trained):
    fake_registry.add("bad", three_feature_model(), NUM_SIG, "champion")
    server = make_server(endpoints=("clf", "bad"), poll_interval_s=0.1, admin_token=TOKEN)
    assert httpx.get(server.url + "/v2/health/ready").status_code == 503
    assert httpx.get(server.url + "/ping").status_code == 503
    r = httpx.get(server.url + "/v2/models/bad/ready")
    assert r.status_code == 503 and r.json()["ready"] is False
    r = httpx.post(server.url + "/invocations?model=bad", json=ROW)
    assert r.status_code == 503 and "not loaded" in r.json()["error"]
    assert "failed its check" in describe(server, "bad")["last_error"]
    assert httpx.post(server.url + "/invocations?model=clf", json=ROW).status_code == 200  # the others serve
    fake_registry.add("bad", trained["clf"], NUM_SIG, "champion")  # a good version is promoted
    assert wait_for(lambda: httpx.get(server.url + "/v2/health/ready").status_code == 200)
    assert httpx.post(server.url + "/invocations?model=bad", json=ROW).headers["x-loopml-model-version"] == "2"


def test_a_server_with_no_model_is_not_ready(make_server):
    server = make_server(endpoints=())
    assert httpx.get(server.url + "/v2/health/live").status_code == 200
    assert httpx.get(server.url + "/v2/health/ready").status_code == 503
