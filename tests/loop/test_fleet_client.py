"""FleetClient: a controller apart from its servers drives every server behind one name (on
Kubernetes the server pods' headless Service). Two real servers on 127.0.0.1 and 127.0.0.2,
same port, stand for two pods; the name's resolution is injected (no DNS server here)."""

from __future__ import annotations

import httpx
import pytest

from loopml.errors import ServeError
from loopml.loop import signals
from loopml.loop.admin_client import FleetClient, ServerClient, resolve_all
from loopml.registry.client import Registry
from loopml.serve.server import ServerHandle
from loopml.serve.settings import ServeSettings

TOKEN = "fleet-token"


@pytest.fixture
def two_pods(registered_model):
    ws, name = registered_model
    settings = ServeSettings(poll_interval_s=0, admin_token=TOKEN, log_predictions=False)
    a = ServerHandle(ws, [name], settings, registry=Registry(ws)).start()
    b = ServerHandle(ws, [name], settings, host="127.0.0.2", port=a.port, registry=Registry(ws)).start()
    try:
        yield ws, name, a, b
    finally:
        b.stop()
        a.stop()


def _pods(host: str, port: int) -> list[str]:
    return ["127.0.0.1", "127.0.0.2"] if host == "loopml-server-pods" else []


def _predict(url: str, rows: list[dict], n: int) -> None:
    for _ in range(n):
        r = httpx.post(f"{url}/invocations", json={"dataframe_records": rows}, timeout=30)
        assert r.status_code == 200, r.text


def test_evidence_sums_every_server_and_changes_reach_each(two_pods):
    ws, name, a, b = two_pods
    reg = Registry(ws)
    cols = [c["name"] for c in reg.signature(reg.resolve(name))["inputs"]]
    from loopml.demo.data import generate_transactions

    rows = generate_transactions(1, seed=3)[cols].to_dict("records")
    _predict(a.url, rows, 3)
    _predict(b.url, rows, 5)
    fleet = FleetClient(f"http://loopml-server-pods:{a.port}", TOKEN, resolve=_pods)
    assert fleet.healthy() and [s.url for s in fleet.servers()] == [a.url, b.url]

    def requests(text: str) -> float:
        return signals.variant_stats(signals.scrape(text, name), "1", ("champion", "primary", "")).requests
    one = requests(ServerClient(a.url, TOKEN).metrics_text())
    both = requests(fleet.metrics_text())
    assert one == 3 and both == 8  # a load-balanced Service would have shown one pod's 3
    assert fleet.describe(name)["servers"] == 2
    fleet.reload(name)
    fleet.set_policy(name, {"kind": "single"})
    # a server that does not answer fails the change, naming it: never "applied on the others"
    b.stop()
    assert not fleet.healthy()
    with pytest.raises(ServeError, match=r"127\.0\.0\.2"):
        fleet.set_policy(name, {"kind": "single"})


def test_a_name_that_resolves_to_nothing_is_an_error_not_an_empty_fleet():
    fleet = FleetClient("http://loopml-server-pods:8080", TOKEN, resolve=lambda h, p: [])
    with pytest.raises(ServeError, match="resolves to no address"):
        fleet.set_policy("m", {"kind": "single"})
    assert not fleet.healthy()
    with pytest.raises(ServeError, match="does not resolve"):
        resolve_all("no-such-host.invalid", 80)
    assert "127.0.0.1" in resolve_all("127.0.0.1", 80)
