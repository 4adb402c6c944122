"""Two server replicas with different local folders (two machines) on one PostgreSQL state
store: a traffic policy set through one replica's admin API is applied by the other, and by a
replica started later. Real servers on 127.0.0.1 (in-process, as in tests/serve), real
PostgreSQL; the registry is the serving tests' in-memory one (the subject here is the policy)."""

from __future__ import annotations

import httpx

from loopml.config import Workspace
from loopml.serve.server import ServerHandle
from loopml.serve.settings import ServeSettings
from tests.serve.conftest import fake_registry, trained  # noqa: F401 - fixtures
from tests.serve.helpers import wait_for

TOKEN = "replica-token"
ROW = {"instances": [[1.0, 2.0, 3.0, 4.0]]}


def _admin(server, method, path, **kw):
    return httpx.request(method, server.url + path, headers={"authorization": f"Bearer {TOKEN}"}, **kw)


def _variants(server, n):
    with httpx.Client(base_url=server.url) as c:
        return {c.post("/invocations", json=ROW).headers["x-loopml-variant"] for _ in range(n)}


def test_replicas_on_two_machines_apply_the_same_policy(tmp_path, pg_url, fake_registry):  # noqa: F811
    started = []

    def replica(folder):
        ws = Workspace(tmp_path / folder, state_uri_override=pg_url).init()
        settings = ServeSettings(poll_interval_s=0.1, max_delay_ms=1.0, admin_token=TOKEN).validate()
        started.append(ServerHandle(ws, ["clf"], settings, registry=fake_registry).start())
        return started[-1]

    try:
        a, b = replica("machine-a"), replica("machine-b")
        assert _admin(a, "PUT", "/admin/models/clf/traffic", json={"kind": "canary", "weight": 1.0}).status_code == 200
        assert wait_for(lambda: _admin(b, "GET", "/admin/models/clf/traffic").json()["kind"] == "canary")
        assert wait_for(lambda: _variants(b, 5) == {"challenger"})
        assert _admin(b, "PUT", "/admin/models/clf/traffic", json={"kind": "single"}).status_code == 200
        assert wait_for(lambda: _variants(a, 5) == {"champion"})
        _admin(a, "PUT", "/admin/models/clf/traffic", json={"kind": "shadow"})
        c = replica("machine-c")  # started later: applies the policy in force
        assert _admin(c, "GET", "/admin/models/clf/traffic").json()["kind"] == "shadow"
        assert not list(tmp_path.rglob("traffic-*.json"))  # nothing went through a folder
    finally:
        for h in started:
            h.stop()
