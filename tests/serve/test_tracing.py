"""OpenTelemetry: spans reach a real OTLP/HTTP receiver when configured; nothing is imported
(and nothing wrapped) when not."""

from __future__ import annotations

import gzip
import subprocess
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)

from loopml.serve.tracing import TracingMiddleware
from tests.serve.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
ROW = [0.5, -1.0, 2.0, 0.1]


class OTLPReceiver:
    """A tiny OTLP/HTTP trace receiver: POST /v1/traces with a protobuf body."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                ok = self.path == "/v1/traces" and self.headers.get("Content-Type") == "application/x-protobuf"
                if ok:
                    msg = ExportTraceServiceRequest()
                    msg.ParseFromString(body)
                    with receiver.lock:
                        receiver.requests.append(msg)
                        receiver.paths.append(self.path)
                reply = ExportTraceServiceResponse().SerializeToString() if ok else b""
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="otlp-receiver", daemon=True)

    def __enter__(self) -> "OTLPReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)

    def spans(self) -> list[dict]:
        """Every received span as a dict: name, ids, kind, service and attributes."""
        out = []
        with self.lock:
            requests = list(self.requests)
        for req in requests:
            for rs in req.resource_spans:
                resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append({"name": s.name, "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                                    "parent": s.parent_span_id.hex(), "kind": s.kind, "status": s.status.code,
                                    "scope": ss.scope.name, "resource": resource,
                                    "attrs": {a.key: _value(a.value) for a in s.attributes}})
        return out


def _value(v):
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


@pytest.fixture
def receiver():
    with OTLPReceiver() as r:
        yield r


def _wait_for(predicate, timeout: float = 30.0) -> bool:
    return wait_for(predicate, timeout)


def _otel_env(monkeypatch, receiver, delay_ms: int) -> None:
    for name in ("OTEL_SDK_DISABLED", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_COMPRESSION",
                 "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "loopml-test")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", str(delay_ms))


def test_spans_exported_over_otlp_http(make_server, receiver, monkeypatch):
    _otel_env(monkeypatch, receiver, delay_ms=50)
    server = make_server(endpoints=("clf",))
    assert isinstance(server.app, TracingMiddleware)
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r1 = c.post("/v2/models/clf/infer", json={"id": "oip-1", "inputs": [
            {"name": f, "shape": [1], "datatype": "FP64", "data": [ROW[i]]} for i, f in enumerate("f0 f1 f2 f3".split())]})
        assert r1.status_code == 200 and r1.json()["id"] == "oip-1"
        r2 = c.post("/invocations", json={"instances": [ROW, ROW, ROW]},
                    headers={"x-request-id": "mlflow-3rows", "traceparent": f"00-{caller_trace}-{caller_span}-01"})
        assert r2.status_code == 200 and len(r2.json()["predictions"]) == 3
        r3 = c.post("/invocations", json={"instances": [[1, 2]]})  # wrong width
        assert r3.status_code == 400
        assert c.get("/v2/health/ready").status_code == 200  # probes are not traced
        assert c.get("/metrics").status_code == 200

    # a short schedule delay exports while the server runs
    assert _wait_for(lambda: len([s for s in receiver.spans() if s["kind"] == 2]) >= 3), receiver.spans()
    server.stop()
    assert set(receiver.paths) == {"/v1/traces"}
    spans = receiver.spans()
    server_spans = {s["attrs"].get("loopml.request.id", "bad"): s for s in spans if s["kind"] == 2}  # SERVER
    assert set(server_spans) == {"oip-1", "mlflow-3rows", "bad"}, spans
    assert all(s["resource"]["service.name"] == "loopml-test" and s["scope"] == "loopml.serve" for s in spans)

    oip = server_spans["oip-1"]
    assert oip["name"] == "POST /v2/models/{model}/infer"
    assert oip["attrs"] == {"http.request.method": "POST", "url.path": "/v2/models/clf/infer",
                            "http.route": "/v2/models/{model}/infer", "http.response.status_code": 200,
                            "loopml.model": "clf", "loopml.model.version": "1", "loopml.variant": "champion",
                            "loopml.rows": 1, "loopml.request.id": "oip-1"}

    mlf = server_spans["mlflow-3rows"]
    assert mlf["name"] == "POST /invocations" and mlf["attrs"]["loopml.rows"] == 3
    assert mlf["attrs"]["http.response.status_code"] == 200 and mlf["attrs"]["loopml.model"] == "clf"
    assert mlf["trace_id"] == caller_trace and mlf["parent"] == caller_span  # W3C trace context honoured

    bad = server_spans["bad"]
    assert bad["attrs"]["http.response.status_code"] == 400 and "loopml.rows" not in bad["attrs"]

    predicts = [s for s in spans if s["name"] == "loopml.predict"]
    assert len(predicts) == 2
    by_parent = {s["parent"]: s for s in predicts}
    for req in (oip, mlf):
        child = by_parent[req["span_id"]]
        assert child["trace_id"] == req["trace_id"] and child["kind"] == 1  # INTERNAL
        assert child["attrs"]["loopml.rows"] == req["attrs"]["loopml.rows"]
        assert child["attrs"]["loopml.model.version"] == "1"


def test_graceful_shutdown_flushes_queued_spans(make_server, receiver, monkeypatch):
    # a schedule delay far beyond the test: only the shutdown flush can deliver these spans
    _otel_env(monkeypatch, receiver, delay_ms=3_600_000)
    server = make_server(endpoints=("clf", "reg"))
    ids = [f"flush-{i}" for i in range(5)]
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for i, rid in enumerate(ids):
            r = c.post("/invocations", json={"instances": [ROW]},
                       headers={"x-request-id": rid, "x-loopml-model": "clf" if i % 2 else "reg"})
            assert r.status_code == 200
    server.stop()  # returns after lifespan shutdown, which flushes
    got = {s["attrs"]["loopml.request.id"]: s["attrs"] for s in receiver.spans() if s["kind"] == 2}
    assert set(got) == set(ids)
    assert [got[rid]["loopml.model"] for rid in ids] == ["reg", "clf", "reg", "clf", "reg"]


_NO_OTEL = r"""
import sys, tempfile
import httpx
from tests.serve.conftest import NUM_SIG, FakeRegistry, clf_model
from loopml.config import Workspace
from loopml.serve.app import ServeApp
from loopml.serve.server import ServerHandle
from loopml.serve.settings import ServeSettings

reg = FakeRegistry()
reg.add("clf", clf_model(), NUM_SIG, "champion")
ws = Workspace.from_env(tempfile.mkdtemp()).init()
with ServerHandle(ws, ["clf"], ServeSettings(max_delay_ms=1.0).validate(), registry=reg) as s:
    assert type(s.app) is ServeApp and s.app.tracing is None, type(s.app)
    with httpx.Client(base_url=s.url) as c:
        assert c.post("/invocations", json={"instances": [[1, 2, 3, 4]]}).status_code == 200
        oip = {"inputs": [{"name": f"f{i}", "shape": [1], "datatype": "FP64", "data": [i]} for i in range(4)]}
        assert c.post("/v2/models/clf/infer", json=oip).status_code == 200
        assert c.get("/metrics").status_code == 200
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
print("OTEL_MODULES", loaded)
assert not loaded, loaded
"""


def test_no_endpoint_no_opentelemetry_import():
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.run([sys.executable, "-c", _NO_OTEL], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OTEL_MODULES []" in proc.stdout
