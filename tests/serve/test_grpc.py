"""OIP v2 over gRPC, spoken by Triton's own client (``tritonclient.grpc``, unchanged) to a real
server on 127.0.0.1: health, metadata, inference equal to REST's for the same rows, errors
as gRPC status codes, the shared metrics and prediction log, the CLI's --grpc-port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from loopml.config import Workspace
from loopml.monitor.predlog import read_predictions
from loopml.registry.client import Registry
from loopml.serve.server import ServerHandle
from loopml.serve.settings import ServeSettings


@pytest.fixture(scope="module")
def served(_registered_model_template, tmp_path_factory):
    """(server, workspace, model name, rows): the example fraud model over REST + gRPC."""
    root, name = _registered_model_template
    dst = tmp_path_factory.mktemp("grpc") / "ws"
    shutil.copytree(root / "ws", dst)
    ws = Workspace(dst).init()
    from loopml.demo.data import generate_transactions

    reg = Registry(ws)
    cols = [c["name"] for c in reg.signature(reg.resolve(name))["inputs"]]
    rows = generate_transactions(6, seed=11)[cols]
    server = ServerHandle(ws, [name], ServeSettings(poll_interval_s=0), grpc_port=0, registry=reg).start()
    try:
        yield server, ws, name, rows
    finally:
        server.stop()


@pytest.fixture(scope="module")
def client(served):
    server = served[0]
    with tc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as c:
        yield c


def _datatype(values: np.ndarray) -> tuple[str, np.ndarray]:
    if values.dtype == bool:
        return "BOOL", values
    if values.dtype.kind in "iu":
        return "INT64", values.astype(np.int64)
    if values.dtype.kind == "f":
        return "FP64", values.astype(np.float64)
    return "BYTES", np.array([str(v).encode() for v in values], dtype=np.object_)


def _triton_inputs(rows, column_shape: str = "[n]") -> list:
    """One tensor per named column, shape [n] or [n, 1] (both accepted, as MLServer's pandas codec)."""
    out = []
    for col in rows.columns:
        datatype, arr = _datatype(rows[col].to_numpy())
        if column_shape == "[n, 1]":
            arr = arr.reshape(-1, 1)
        t = tc.InferInput(col, list(arr.shape), datatype)
        t.set_data_from_numpy(arr)
        out.append(t)
    return out


def _rest_body(rows) -> dict:
    inputs = []
    for col in rows.columns:
        datatype, arr = _datatype(rows[col].to_numpy())
        data = [v.decode() for v in arr] if datatype == "BYTES" else arr.tolist()
        inputs.append({"name": col, "shape": [len(arr)], "datatype": datatype, "data": data})
    return {"inputs": inputs, "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}


def _code(exc: InferenceServerException) -> str:
    return str(exc.status())


def test_health_and_metadata(served, client):
    server, _, name, rows = served
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(name)
    assert client.get_server_metadata().name == "loopml"
    meta = client.get_model_metadata(name)
    rest = httpx.get(f"{server.url}/v2/models/{name}").json()
    assert meta.name == name and list(meta.versions) == rest["versions"] == ["1"]
    assert [(t.name, t.datatype) for t in meta.inputs] == [(t["name"], t["datatype"]) for t in rest["inputs"]]
    assert [t.name for t in meta.inputs] == list(rows.columns)
    assert [t.name for t in meta.outputs] == [t["name"] for t in rest["outputs"]]


@pytest.mark.parametrize("column_shape", ["[n]", "[n, 1]"])
def test_infer_equals_rest_for_the_same_rows(served, client, column_shape):
    server, _, name, rows = served
    outputs = [tc.InferRequestedOutput("predict"), tc.InferRequestedOutput("predict_proba")]
    res = client.infer(name, _triton_inputs(rows, column_shape), outputs=outputs, request_id=f"g-{len(column_shape)}")
    rest = httpx.post(f"{server.url}/v2/models/{name}/infer", json=_rest_body(rows)).json()
    by_name = {o["name"]: o for o in rest["outputs"]}
    assert res.as_numpy("predict").tolist() == by_name["predict"]["data"]
    proba = res.as_numpy("predict_proba")
    assert list(proba.shape) == by_name["predict_proba"]["shape"] == [len(rows), 2]
    assert np.array_equal(proba.ravel(), np.asarray(by_name["predict_proba"]["data"]))
    resp = res.get_response()
    assert resp.model_name == name and resp.model_version == "1" and resp.id == f"g-{len(column_shape)}"


def test_typed_contents_in_typed_contents_out(served):
    """A request with typed ``contents`` (no raw bytes) is answered with typed contents."""
    server, _, name, rows = served
    req = service_pb2.ModelInferRequest(model_name=name, id="typed-1")
    for col in rows.columns:
        datatype, arr = _datatype(rows[col].to_numpy())
        t = req.inputs.add(name=col, datatype=datatype, shape=[len(arr)])
        field = {"BOOL": "bool_contents", "INT64": "int64_contents", "FP64": "fp64_contents",
                 "BYTES": "bytes_contents"}[datatype]
        getattr(t.contents, field).extend(arr.tolist())
    req.outputs.add(name="predict")
    resp = _stub_infer(server, req)
    rest = httpx.post(f"{server.url}/v2/models/{name}/infer", json=_rest_body(rows)).json()
    assert not resp.raw_output_contents
    (out,) = resp.outputs
    assert out.name == "predict" and list(out.shape) == [len(rows)]
    typed = list(out.contents.int64_contents) or list(out.contents.fp64_contents) or \
        [b.decode() for b in out.contents.bytes_contents]
    assert typed == rest["outputs"][0]["data"]


def test_unknown_model_is_not_found(client, served):
    rows = served[3]
    with pytest.raises(InferenceServerException) as e:
        client.infer("no-such-model", _triton_inputs(rows))
    assert _code(e.value) == "StatusCode.NOT_FOUND" and "no-such-model" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("no-such-model")
    assert _code(e.value) == "StatusCode.NOT_FOUND"


def test_wrong_datatype_is_invalid_argument(client, served):
    _, _, name, rows = served
    inputs = _triton_inputs(rows)
    numeric = next(i for i, c in enumerate(rows.columns) if rows[c].dtype.kind == "f")
    bad = tc.InferInput(rows.columns[numeric], [len(rows)], "BYTES")
    bad.set_data_from_numpy(np.array([b"1.0"] * len(rows), dtype=np.object_))
    inputs[numeric] = bad
    with pytest.raises(InferenceServerException) as e:
        client.infer(name, inputs)
    assert _code(e.value) == "StatusCode.INVALID_ARGUMENT"
    assert rows.columns[numeric] in e.value.message() and "BYTES" in e.value.message()


def _stub_infer(server, req):
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        return service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(req, timeout=30)


def test_raw_bytes_that_do_not_fit_the_shape_are_invalid_argument(served):
    import grpc

    server, _, name, rows = served
    req = service_pb2.ModelInferRequest(model_name=name)
    for col in rows.columns:
        datatype, arr = _datatype(rows[col].to_numpy())
        req.inputs.add(name=col, datatype=datatype, shape=[len(arr)])
        raw = (b"".join(struct.pack("<I", len(v)) + v for v in arr) if datatype == "BYTES"  # 4-byte length prefix
               else arr.tobytes())
        req.raw_input_contents.append(raw)
    req.raw_input_contents[-1] = req.raw_input_contents[-1][:-3]  # a few bytes short
    with pytest.raises(grpc.RpcError) as e:
        _stub_infer(server, req)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and rows.columns[-1] in e.value.details()


def test_a_passed_deadline_is_deadline_exceeded(client, served):
    _, _, name, rows = served
    with pytest.raises(InferenceServerException) as e:
        client.infer(name, _triton_inputs(rows), headers={"x-loopml-deadline-ms": "0.000001"})
    assert _code(e.value) == "StatusCode.DEADLINE_EXCEEDED"


def test_grpc_requests_reach_metrics_and_the_prediction_log(served, client):
    server, ws, name, rows = served

    def answered() -> float:
        text = httpx.get(server.url + "/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("loopml_requests_total{") and f'model="{name}"' in line and 'status="200"' in line)

    before = answered()
    for i in range(3):
        client.infer(name, _triton_inputs(rows), request_id=f"grpc-log-{i}")
    assert answered() == before + 3
    end = time.monotonic() + 30
    ids: set = set()
    while time.monotonic() < end and not {f"grpc-log-{i}:0" for i in range(3)} <= ids:
        log = read_predictions(ws.predictions, name)
        ids = set(log["request_id"]) if len(log) else set()
        time.sleep(0.1)
    assert {f"grpc-log-{i}:{j}" for i in range(3) for j in range(len(rows))} <= ids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_grpc_port_runtime_lines_and_sigterm(registered_model):
    """``loopml serve --grpc-port``: both protocols in one process, one line per model naming
    its runtime, SIGTERM drains and exits 0 with the gRPC requests in the prediction log."""
    ws, name = registered_model
    port, grpc_port = _free_port(), _free_port()
    code = "from loopml.cli.main import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", "-m", name, "--port", str(port),
                             "--grpc-port", str(grpc_port), "--poll-interval", "0"],
                            env={**os.environ, "LOOPML_HOME": str(ws.home)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 90
        with tc.InferenceServerClient(f"127.0.0.1:{grpc_port}") as c:
            while time.monotonic() < end:
                try:
                    if c.is_model_ready(name):
                        break
                except InferenceServerException:
                    time.sleep(0.1)
            reg = Registry(ws)
            cols = [x["name"] for x in reg.signature(reg.resolve(name))["inputs"]]
            from loopml.demo.data import generate_transactions

            rows = generate_transactions(2, seed=3)[cols]
            for i in range(2):
                c.infer(name, _triton_inputs(rows), request_id=f"cli-{i}")
        assert httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    runtime_lines = [line for line in err.splitlines() if "runtime" in line and name in line]
    assert len(runtime_lines) == 1 and "version 1" in runtime_lines[0], err
    assert f"gRPC (OIP v2) on 127.0.0.1:{grpc_port}" in err
    log = read_predictions(ws.predictions, name)
    assert {"cli-0:0", "cli-0:1", "cli-1:0", "cli-1:1"} <= set(log["request_id"])
