"""The server against the real MLflow registry: signature, answers, promotion pickup, CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np

from loopml.monitor.predlog import read_predictions
from loopml.registry.client import Registry
from loopml.serve.server import ServerHandle
from loopml.serve.settings import ServeSettings


def sample_rows(registry: Registry, ref, n: int = 5):
    from loopml.demo.data import generate_transactions

    cols = [c["name"] for c in registry.signature(ref)["inputs"]]
    return generate_transactions(n, seed=7)[cols]


def test_real_registry_serving_and_promotion(registered_model):
    ws, name = registered_model
    reg = Registry(ws)
    ref = reg.resolve(name)
    frame = sample_rows(reg, ref)
    want = reg.load_native(ref).predict(frame).tolist()
    with ServerHandle(ws, [name], ServeSettings(poll_interval_s=0.2)) as server:
        meta = httpx.get(f"{server.url}/v2/models/{name}").json()
        assert [i["name"] for i in meta["inputs"]] == list(frame.columns)
        body = {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}
        r = httpx.post(server.url + "/invocations", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == want and r.headers["x-loopml-model-version"] == "1"
        v2 = reg.register(ref.source, name, ref.run_id, {"note": "same model, new version"})
        reg.promote(name, v2.version, why="test")
        end = time.monotonic() + 30
        version = None
        while time.monotonic() < end and version != v2.version:
            version = httpx.post(server.url + "/invocations", json=body).headers["x-loopml-model-version"]
            time.sleep(0.05)
        assert version == v2.version
    log = read_predictions(ws.predictions, name)
    assert set(log["version"]) >= {"1", v2.version}
    # Rows of one batch share a timestamp, so the log's row order within a batch is not
    # defined: compare the logged inputs as a set with the rows that were sent.
    col = frame.columns[0]
    if frame.dtypes.iloc[0] != object:
        logged = {round(float(v), 9) for v in log["in." + col]}
        assert logged == {round(float(v), 9) for v in frame[col]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args, env=None, **kw):
    code = "from loopml.cli.main import main; main()"
    return subprocess.Popen([sys.executable, "-c", code, *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_cli_serve_sigterm_flushes_and_port_in_use(registered_model):
    ws, name = registered_model
    port = _free_port()
    env = {"LOOPML_HOME": str(ws.home)}
    proc = _cli("serve", "-m", f"{name}@champion", "--port", str(port), "--poll-interval", "0.5", env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        end = time.monotonic() + 90
        while time.monotonic() < end:
            try:
                if httpx.get(url + "/v2/health/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        reg = Registry(ws)
        frame = sample_rows(reg, reg.resolve(name), 3)
        body = {"dataframe_records": frame.to_dict(orient="records")}
        for _ in range(4):
            assert httpx.post(url + "/invocations", json=body).status_code == 200
        busy = _cli("serve", "-m", name, "--port", str(port), env=env)
        out, err = busy.communicate(timeout=120)
        assert busy.returncode == 2
        assert f"port {port}" in err and "Traceback" not in err
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = read_predictions(ws.predictions, name)
    assert len(log) == 12 and set(log["variant"]) == {"champion"}
