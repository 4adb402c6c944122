"""Conformance: schemathesis fuzzes a real server against its own ``/openapi.json`` (statuses,
content types, response bodies, 405 with ``Allow``, 401 with ``WWW-Authenticate``, no 5xx),
bounded and derandomized so it is fast and deterministic. Plus the fixed cases it found."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from schemathesis.checks import positive_data_acceptance
from hypothesis import HealthCheck, given, settings

from tests.serve.conftest import FEATURES

TOKEN = "conformance-token"


@pytest.fixture(scope="module")
def conformance_server(tmp_path_factory, trained):
    """One server for the module (the fuzzer's admin calls may unload models: its own copy)."""
    from loopml.config import Workspace
    from loopml.serve.server import ServerHandle
    from loopml.serve.settings import ServeSettings
    from tests.serve.conftest import MIXED_SIG, NUM_SIG, FakeRegistry

    reg = FakeRegistry()
    reg.add("clf", trained["clf"], NUM_SIG, "champion")
    reg.add("mixed", trained["mixed"], MIXED_SIG, "champion")
    ws = Workspace.from_env(tmp_path_factory.mktemp("conf") / "ws").init()
    settings_ = ServeSettings(poll_interval_s=0, max_delay_ms=0.0, admin_token=TOKEN, max_rows=100).validate()
    with ServerHandle(ws, ["clf", "mixed"], settings_, registry=reg) as server:
        yield server


def _operations(url: str):
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def test_api_conforms_to_its_openapi_document(conformance_server):
    """Every operation, a few derandomized examples each (schemathesis' default checks: no 5xx,
    documented status and content type, response body matching its schema, and more).
    Driven through schemathesis' Python API: its pytest plugin does not load under this pytest."""
    failures = []
    operations = _operations(conformance_server.url)
    assert len(operations) >= 20  # the admin API is described too
    for op in operations:
        headers = {"Authorization": f"Bearer {TOKEN}"} if op.path.startswith("/admin") else None
        # whether a body is valid there depends on the model's signature or the registry (input
        # names, shape against data, a ref that exists), which JSON Schema cannot say: those may
        # refuse a schema-valid body (400/422), every other check still applies
        excluded = [positive_data_acceptance] if op.method == "post" and op.path != "/admin/reload" else []
        if op.method == "put":
            excluded = [positive_data_acceptance]

        @given(case=op.as_strategy())
        @settings(max_examples=6, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(headers=headers, excluded_checks=excluded)

        try:
            check()
        except BaseException as e:  # noqa: BLE001 - schemathesis raises a BaseExceptionGroup; report all
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            failures.append(f"{op.method.upper()} {op.path}: {str(e)[:1500]}")
    assert not failures, "\n\n".join(failures)


@pytest.fixture
def client(make_server):
    """A server of its own: the fuzzer above may have unloaded the module's models."""
    server = make_server(("clf",), admin_token=TOKEN)
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


@pytest.mark.parametrize("path,method,allow", [
    ("/invocations", "GET", "POST"), ("/v2/models/clf/infer", "GET", "POST"), ("/v2/health/live", "POST", "GET"),
    ("/metrics", "DELETE", "GET"), ("/admin/models/clf/traffic", "DELETE", "GET, POST, PUT"),
])
def test_405_carries_allow(client, path, method, allow):
    r = client.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 405 and r.headers["allow"] == allow and r.json()["error"]


def test_401_carries_www_authenticate(client):
    r = client.get("/admin/models", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")


def _oip(datatype: str, value: str) -> bytes:
    """An infer body with ``value`` (raw JSON text: orjson cannot write ints past 64 bits) in every input."""
    tensors = ",".join(f'{{"name": "{f}", "shape": [1], "datatype": "{datatype}", "data": [{value}]}}' for f in FEATURES)
    return ('{"inputs": [' + tensors + "]}").encode()


@pytest.mark.parametrize("datatype,value", [("INT64", str(2 ** 63)), ("INT64", str(-(2 ** 63) - 1)),
                                            ("INT8", "128"), ("UINT8", "-1"), ("FP64", "true"),
                                            ("INT64", "false")])
def test_numbers_outside_their_datatype_are_400(client, datatype, value):
    r = client.post("/v2/models/clf/infer", content=_oip(datatype, value), headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]


def test_numbers_inside_their_datatype_are_fine(client):
    r = client.post("/v2/models/clf/infer", content=_oip("INT64", str(2 ** 40)),
                    headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
