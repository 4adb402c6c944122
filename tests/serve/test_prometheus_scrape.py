"""A real Prometheus (the Debian ``prometheus`` package) scrapes a running server's /metrics."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import httpx

ROW = {"instances": [[1.0, 2.0, 3.0, 4.0]]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(base: str, promql: str) -> list[dict]:
    r = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=5)
    r.raise_for_status()
    return r.json()["data"]["result"]


def wait_result(base: str, promql: str, proc: subprocess.Popen, timeout: float = 45.0) -> list[dict]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"prometheus exited with {proc.returncode}: {proc.stderr.read()[-2000:]}"
        try:
            result = query(base, promql)
            if result:
                return result
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"no result for {promql!r} within {timeout}s")


def test_prometheus_scrapes_the_server(server, workspace, tmp_path):
    binary = shutil.which("prometheus")
    assert binary, "the prometheus binary is needed: apt-get install -y prometheus"
    from loopml.monitor.metrics import publish_window_metrics

    publish_window_metrics(workspace, "clf", "1", {"drift.detected": 1.0, "drift.feature.f0": 0.42})
    for _ in range(3):
        assert httpx.post(server.url + "/invocations", json=ROW).status_code == 200
    target = server.url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: loopml\n    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        up = wait_result(base, 'up{job="loopml"} == 1', proc)
        assert up[0]["metric"]["instance"] == target
        ok = wait_result(base, 'loopml_requests_total{model="clf",status="200"}', proc)
        assert float(ok[0]["value"][1]) >= 3 and ok[0]["metric"]["variant"] == "champion"
        drift = wait_result(base, 'loopml_drift_score{model="clf",feature="f0"}', proc)
        assert float(drift[0]["value"][1]) == 0.42
        assert query(base, 'loopml_drift_detected{model="clf"}')[0]["value"][1] == "1"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
