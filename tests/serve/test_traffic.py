"""Traffic policies (canary, sticky A/B, shadow) and the admin API that sets them."""

from __future__ import annotations


import httpx
import pytest

from loopml.errors import InvalidTrafficPolicy
from loopml.serve.traffic import bucket, parse_policy
from tests.serve.conftest import FEATURES
from tests.serve.helpers import wait_for

TOKEN = "s3cret"
ROW = {"instances": [[1.0, 2.0, 3.0, 4.0]]}


def test_parse_policy_validates():
    assert parse_policy({"kind": "canary", "weight": 0.25}).weight == 0.25
    assert parse_policy({"kind": "ab", "key": "header:x-user", "weight": 0.5}).key == "header:x-user"
    for bad in ({"kind": "canary"}, {"kind": "canary", "weight": 2}, {"kind": "ab", "weight": 0.5},
                {"kind": "blue"}, {"kind": "shadow", "extra": 1}, {"kind": "ab", "key": "cookie:x", "weight": 0.1}, []):
        with pytest.raises(InvalidTrafficPolicy):
            parse_policy(bad)


def test_bucket_is_stable_and_spread():
    assert bucket("user-1") == bucket("user-1")
    values = [bucket(f"user-{i}") for i in range(2000)]
    assert 0.45 < sum(v < 0.5 for v in values) / 2000 < 0.55


@pytest.fixture
def admin_server(make_server):
    return make_server(endpoints=("clf",), admin_token=TOKEN)


def admin(server, method, path, **kw):
    return httpx.request(method, server.url + path, headers={"authorization": f"Bearer {TOKEN}"}, **kw)


def test_admin_disabled_without_token_and_needs_the_right_token(server, admin_server):
    r = httpx.post(server.url + "/admin/reload")
    assert r.status_code == 404 and "LOOPML_ADMIN_TOKEN" in r.json()["error"]
    assert httpx.post(admin_server.url + "/admin/reload").status_code == 401
    assert httpx.post(admin_server.url + "/admin/reload", headers={"authorization": "Bearer nope"}).status_code == 401
    assert admin(admin_server, "POST", "/admin/reload").status_code == 200


def variants_seen(server, n, headers=None, body=ROW):
    seen = []
    with httpx.Client(base_url=server.url) as c:
        for i in range(n):
            h = headers(i) if callable(headers) else (headers or {})
            r = c.post("/invocations", json=body(i) if callable(body) else body, headers=h)
            assert r.status_code == 200, r.text
            seen.append((r.headers["x-loopml-variant"], r.headers["x-loopml-model-version"], r.json()["predictions"][0]))
    return seen


def test_canary_split_and_back(admin_server):
    r = admin(admin_server, "PUT", "/admin/models/clf/traffic", json={"kind": "canary", "weight": 0.5})
    assert r.status_code == 200, r.text
    assert r.json()["challenger"]["version"] == "2"
    seen = variants_seen(admin_server, 120)
    by_variant = {v for v, _, _ in seen}
    assert by_variant == {"champion", "challenger"}
    # the flipped challenger answers the opposite class
    assert {(v, p) for v, _, p in seen} == {("champion", 1), ("challenger", 0)}
    assert admin(admin_server, "PUT", "/admin/models/clf/traffic", json={"kind": "single"}).status_code == 200
    assert {v for v, _, _ in variants_seen(admin_server, 20)} == {"champion"}


def test_ab_sticky_by_header_and_by_input(admin_server):
    admin(admin_server, "PUT", "/admin/models/clf/traffic", json={"kind": "ab", "key": "header:x-user", "weight": 0.5})
    first = variants_seen(admin_server, 40, headers=lambda i: {"x-user": f"u{i % 10}"})
    second = variants_seen(admin_server, 40, headers=lambda i: {"x-user": f"u{i % 10}"})
    assert first == second
    assert {v for v, _, _ in first} == {"champion", "challenger"}
    for i in range(10):
        want = "challenger" if bucket(f"u{i}") < 0.5 else "champion"
        assert first[i][0] == want
    admin(admin_server, "PUT", "/admin/models/clf/traffic", json={"kind": "ab", "key": "input:customer", "weight": 0.5})

    def body(i):
        return {"dataframe_records": [dict(zip(FEATURES, [1.0, 2.0, 3.0, 4.0]), customer=f"c{i % 7}")]}

    a = variants_seen(admin_server, 21, body=body)
    assert a == variants_seen(admin_server, 21, body=body)
    assert {v for v, _, _ in a} == {"champion", "challenger"}


def test_shadow_logs_challenger_but_answers_with_champion(make_server, workspace):
    server = make_server(endpoints=("clf",), admin_token=TOKEN)
    admin(server, "PUT", "/admin/models/clf/traffic", json={"kind": "shadow"})
    seen = variants_seen(server, 30, headers=lambda i: {"x-request-id": f"r{i}"})
    assert {(v, ver, p) for v, ver, p in seen} == {("champion", "1", 1)}
    server.stop()
    from loopml.monitor.predlog import read_predictions

    log = read_predictions(workspace.predictions, "clf")
    shadow = log[log["variant"] == "shadow"]
    champion = log[log["variant"] == "champion"]
    assert len(champion) == 30 and len(shadow) == 30
    assert set(shadow["version"]) == {"2"} and set(champion["version"]) == {"1"}
    assert set(shadow["request_id"]) == set(champion["request_id"]) == {f"r{i}" for i in range(30)}
    assert set(shadow["out.prediction"]) == {0}


def test_admin_load_unload_and_list(admin_server):
    r = admin(admin_server, "POST", "/admin/models/reg/load", json={"ref": "1"})
    assert r.status_code == 200 and r.json()["primary"]["version"] == "1"
    assert httpx.post(admin_server.url + "/invocations?model=reg", json=ROW).status_code == 200
    names = [m["name"] for m in admin(admin_server, "GET", "/admin/models").json()["models"]]
    assert names == ["clf", "reg"]
    assert admin(admin_server, "DELETE", "/admin/models/reg").status_code == 200
    assert httpx.post(admin_server.url + "/invocations?model=reg", json=ROW).status_code == 404
    assert admin(admin_server, "POST", "/admin/models/ghost/load", json={}).status_code == 404
    assert admin(admin_server, "PUT", "/admin/models/clf/traffic", json={"kind": "nope"}).status_code == 422


def test_inference_token(make_server):
    server = make_server(endpoints=("clf",), inference_token="tok")
    assert httpx.post(server.url + "/invocations", json=ROW).status_code == 401
    ok = httpx.post(server.url + "/invocations", json=ROW, headers={"authorization": "Bearer tok"})
    assert ok.status_code == 200
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200


def test_policy_set_on_one_worker_reaches_the_others(make_server, workspace):
    """Two servers on one workspace stand in for ``--workers 2``: a policy set through one
    worker's admin API is persisted in the workspace and applied by the other."""
    from loopml.serve.policy_store import load_policy, policy_path

    a = make_server(endpoints=("clf",), admin_token=TOKEN)
    b = make_server(endpoints=("clf",), admin_token=TOKEN)
    r = admin(a, "PUT", "/admin/models/clf/traffic", json={"kind": "canary", "weight": 1.0})
    assert r.status_code == 200, r.text
    path = policy_path(workspace.home, "clf")
    assert load_policy(path).kind == "canary" and not list(path.parent.glob("*.tmp"))
    assert wait_for(lambda: admin(b, "GET", "/admin/models/clf/traffic").json()["kind"] == "canary")
    assert wait_for(lambda: {v for v, _, _ in variants_seen(b, 5)} == {"challenger"})
    # and back, set through the other worker this time
    assert admin(b, "PUT", "/admin/models/clf/traffic", json={"kind": "single"}).status_code == 200
    assert wait_for(lambda: {v for v, _, _ in variants_seen(a, 5)} == {"champion"})
    # a worker started later applies the policy in force
    admin(a, "PUT", "/admin/models/clf/traffic", json={"kind": "shadow"})
    c = make_server(endpoints=("clf",), admin_token=TOKEN)
    assert admin(c, "GET", "/admin/models/clf/traffic").json()["kind"] == "shadow"
    assert admin(c, "GET", "/admin/models/clf").json()["challenger"]["variant"] == "shadow"


def test_unreadable_policy_file_is_ignored(make_server, workspace):
    from loopml.serve.policy_store import policy_path

    a = make_server(endpoints=("clf",), admin_token=TOKEN)
    path = policy_path(workspace.home, "clf")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    assert admin(a, "GET", "/admin/models/clf/traffic").json()["kind"] == "single"
    path.write_text('{"kind": "canary", "weight": 1.0}')
    assert wait_for(lambda: {v for v, _, _ in variants_seen(a, 3)} == {"challenger"})
