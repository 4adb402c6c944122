"""The loop on the local platform: ``loopml platform up`` starts real PostgreSQL, SeaweedFS,
MLflow, Alertmanager and Prometheus; ``loopml run`` trains and registers against them with
nothing but the printed environment; every check reads back through the engines' own APIs.

One platform serves the whole session (the ``local_platform`` fixture); the last test stops it
with ``down``, checks no process is left, and brings it back with ``up`` on the same data.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psycopg2
import pytest

from loopml.procs import pid_alive

CLI = [sys.executable, "-m", "loopml.cli.main"]


def _cli(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=timeout)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _state(plat) -> dict:
    return plat.read_state()


def _process_family(pid: int) -> set[int]:
    """``pid``, the members of its process group and its children (uvicorn workers, postgres
    back ends): everything ``down`` must leave dead."""
    family = {pid}
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return family
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid, group = int(fields[1]), int(fields[2])
        if group == pgid or ppid == pid:
            family.add(int(entry))
    return family


@pytest.fixture(scope="module")
def trained(local_platform, platform_env, tmp_path_factory):
    """``loopml new`` + ``loopml run`` against the platform, configured only by the environment."""
    root = tmp_path_factory.mktemp("platform-loop")
    env = dict(platform_env, LOOPML_HOME=str(root / "home"))
    assert _cli("new", str(root / "proj"), "--rows", "3000", env=env).returncode == 0
    out = _cli("run", "-p", str(root / "proj"), "--json", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout[out.stdout.index("{"):]), root


def test_up_prints_the_environment_without_secrets(local_platform):
    plat = local_platform
    lines = plat.up_stdout.strip().splitlines()
    exported = dict(line.removeprefix("export ").split("=", 1) for line in lines)
    assert {"LOOPML_TRACKING_URI", "LOOPML_STATE_URI", "PGPASSFILE", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} <= set(exported)
    s3_secret = (plat.root / "seaweedfs" / "s3_secret").read_text().strip()
    pg_password = (plat.root / "postgres" / "password").read_text().strip()
    assert exported["AWS_SECRET_ACCESS_KEY"] == f'"$(cat {plat.root / "seaweedfs" / "s3_secret"})"'
    assert exported["LOOPML_STATE_URI"].startswith("postgresql://loopml@127.0.0.1:")
    assert exported["LOOPML_HOME"] == "s3://loopml/home"  # the one setting of #11, on the platform's bucket
    # no secret in the output, the state file, any log or any engine's command line
    state_text = plat.state_file.read_text()
    logs = "".join(p.read_text(errors="replace") for p in plat.root.rglob("*.log"))
    argvs = [Path(f"/proc/{c['pid']}/cmdline").read_bytes().decode(errors="replace")
             for c in _state(plat).values() if c.get("pid")]
    for secret in (s3_secret, pg_password):
        assert secret not in plat.up_stdout and secret not in state_text and secret not in logs
        assert all(secret not in argv for argv in argvs)
    for secret_file in ("seaweedfs/s3_secret", "seaweedfs/s3.json", "postgres/password", "postgres/pgpass",
                        "platform.json"):
        assert stat.S_IMODE((plat.root / secret_file).stat().st_mode) == 0o600, secret_file


def test_the_loop_registers_in_mlflow_on_postgres_with_artifacts_in_seaweedfs(local_platform, trained):
    from mlflow import MlflowClient

    result, root = trained
    plat = local_platform
    env = plat.environment(secrets=True)
    assert result["version"] == "1" and result["promoted"]
    server = MlflowClient(tracking_uri=env["LOOPML_TRACKING_URI"], registry_uri=env["LOOPML_TRACKING_URI"])
    mv = server.get_model_version_by_alias(result["model"], "champion")
    assert mv.version == "1" and mv.run_id == result["run_id"]
    exp = server.get_experiment(server.get_run(result["run_id"]).info.experiment_id)
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # proxied by the server
    # MLflow's metadata is in PostgreSQL ...
    pg = plat._components(plat.read_state())["postgres"]
    with psycopg2.connect(pg.url("mlflow")) as conn, conn.cursor() as cur:
        cur.execute("SELECT name FROM registered_models")
        assert (result["model"],) in cur.fetchall()
        cur.execute("SELECT status FROM runs WHERE run_uuid = %s", (result["run_id"],))
        assert cur.fetchone() == ("FINISHED",)
    conn.close()
    # ... and its artifacts are objects in SeaweedFS's bucket, listed through the S3 API
    s3 = plat._components(plat.read_state())["seaweedfs"].client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="loopml", Prefix="mlflow/").get("Contents", [])]
    assert any(k.endswith("/MLmodel") for k in keys), keys
    assert any(k.endswith("gate.json") and result["run_id"] in k for k in keys), keys
    assert not any((root / "home").rglob("MLmodel"))  # nothing landed in the local workspace


def test_prometheus_has_the_loopml_rules_and_sends_to_the_alertmanager(local_platform):
    plat = local_platform
    state = _state(plat)
    prom, am = state["prometheus"]["url"], state["alertmanager"]["url"]
    assert _get(prom + "/api/v1/status/buildinfo")["status"] == "success"
    groups = _get(prom + "/api/v1/rules")["data"]["groups"]
    rules = {r["name"]: r for g in groups if g["name"] == "loopml" for r in g["rules"]}
    assert {"LoopmlDriftDetected", "LoopmlDriftShareHigh"} <= set(rules)
    assert rules["LoopmlDriftDetected"]["query"] == "loopml_drift_detected >= 1"
    assert all(r["health"] != "err" for r in rules.values())
    managers = _get(prom + "/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
    assert [m["url"] for m in managers] == [am + "/api/v2/alerts"]
    status = _get(am + "/api/v2/status")
    assert status["cluster"]["status"] == "disabled"  # no gossip port on any interface


def test_status_shows_every_component_healthy(local_platform):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    out = _cli("platform", "status", "--dir", str(local_platform.root), "--json", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = json.loads(out.stdout)
    assert [r["component"] for r in rows] == ["postgres", "seaweedfs", "mlflow", "alertmanager", "prometheus"]
    assert all(r["healthy"] and r["pid"] and urllib.parse.urlsplit(r["url"]).hostname == "127.0.0.1" for r in rows)
    table = _cli("platform", "status", "--dir", str(local_platform.root), env=env)
    assert table.returncode == 0 and "mlflow" in table.stdout and "no" not in table.stdout.split()


def test_status_on_a_folder_without_a_platform_is_a_one_line_error(tmp_path):
    out = _cli("platform", "status", "--dir", str(tmp_path / "none"), env=dict(os.environ))
    assert out.returncode == 2
    assert "no platform in" in out.stderr and "loopml platform up" in out.stderr
    assert "Traceback" not in out.stderr


def test_second_up_reports_running_and_restarts_only_what_died(local_platform, platform_env):
    plat = local_platform
    before = {n: c["pid"] for n, c in _state(plat).items()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    again = _cli("platform", "up", "--dir", str(plat.root), env=env)
    assert again.returncode == 0 and "already running" in again.stderr
    assert {n: c["pid"] for n, c in _state(plat).items()} == before
    # --scrape adds targets to the running Prometheus (e.g. the controller's listener); a bad one is one line
    scraped = _cli("platform", "up", "--dir", str(plat.root), "--scrape", "127.0.0.1:9", env=env)
    targets = plat.root / "prometheus" / "targets" / "cli.json"
    try:
        assert scraped.returncode == 0 and json.loads(targets.read_text())[0]["targets"] == ["127.0.0.1:9"]
    finally:
        targets.unlink(missing_ok=True)
    bad = _cli("platform", "up", "--dir", str(plat.root), "--scrape", "controller", env=env)
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr and "Traceback" not in bad.stderr
    # kill Alertmanager: the next `up` starts it (on its recorded port) and nothing else
    os.kill(before["alertmanager"], 9)
    for _ in range(50):
        if not pid_alive(before["alertmanager"]):
            break
        time.sleep(0.1)
    assert _cli("platform", "status", "--dir", str(plat.root), env=env).returncode == 1
    out = _cli("platform", "up", "--dir", str(plat.root), env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    after = {n: c["pid"] for n, c in _state(plat).items()}
    assert after["alertmanager"] != before["alertmanager"]
    assert {n: p for n, p in after.items() if n != "alertmanager"} == {n: p for n, p in before.items()
                                                                        if n != "alertmanager"}
    assert _cli("platform", "status", "--dir", str(plat.root), env=env).returncode == 0


def test_a_port_taken_while_down_moves_the_component_and_restarts_its_dependant(local_platform):
    import socket

    plat = local_platform
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    before = _state(plat)
    am_port = before["alertmanager"]["ports"]["main"]
    os.kill(before["alertmanager"]["pid"], 9)
    for _ in range(50):
        if not pid_alive(before["alertmanager"]["pid"]):
            break
        time.sleep(0.1)
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for _ in range(140):  # the killed server's half-closed connections may hold the port a while
        try:
            squatter.bind(("127.0.0.1", am_port))  # another program takes the port while it is down
            break
        except OSError:
            time.sleep(0.5)
    else:
        raise AssertionError(f"port {am_port} stayed busy after Alertmanager was killed")
    squatter.listen()
    try:
        out = _cli("platform", "up", "--dir", str(plat.root), env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        after = _state(plat)
        assert after["alertmanager"]["ports"]["main"] != am_port
        # Prometheus was started with the old address: it restarted (same port) and sends to the new one
        assert after["prometheus"]["pid"] != before["prometheus"]["pid"]
        assert after["prometheus"]["url"] == before["prometheus"]["url"]
        managers = _get(after["prometheus"]["url"] + "/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
        assert [m["url"] for m in managers] == [after["alertmanager"]["url"] + "/api/v2/alerts"]
        assert {n: after[n]["pid"] for n in ("postgres", "seaweedfs", "mlflow")} == \
            {n: before[n]["pid"] for n in ("postgres", "seaweedfs", "mlflow")}
        assert "LoopmlDriftDetected" in {r["name"] for g in _get(after["prometheus"]["url"] + "/api/v1/rules")
                                         ["data"]["groups"] for r in g["rules"]}
        assert _cli("platform", "status", "--dir", str(plat.root), env=env).returncode == 0
    finally:
        squatter.close()


def test_a_drift_gauge_reaches_the_webhook_through_prometheus_and_alertmanager(local_platform, tmp_path):
    """loopml's own /metrics collector (served by prometheus-client on 127.0.0.1) reports drift;
    the platform's Prometheus scrapes it, its loopml rule fires, and Alertmanager posts to a
    webhook with the bearer token from a file."""
    import http.server
    import threading

    from prometheus_client import CollectorRegistry, start_http_server

    from loopml.monitor.metrics import MonitorCollector, gauge_samples

    plat = local_platform
    registry, collector = CollectorRegistry(), MonitorCollector()
    registry.register(collector)
    collector.update("fraud", gauge_samples("fraud", {"drift.detected": 1.0, "drift.share": 0.25}))
    metrics_server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    received: list[tuple[str, dict]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append((self.headers.get("Authorization", ""), body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    token.chmod(0o600)
    try:
        plat.set_alert_webhook(f"http://127.0.0.1:{hook.server_address[1]}/alerts", token)
        t0 = time.monotonic()
        plat.add_scrape_targets("test-server", [f"127.0.0.1:{metrics_server.server_address[1]}"])
        deadline = t0 + 240
        firing = None
        while time.monotonic() < deadline and firing is None:
            for auth, body in received:
                names = [a["labels"].get("alertname") for a in body.get("alerts", []) if a["status"] == "firing"]
                if "LoopmlDriftDetected" in names:
                    firing = (auth, body)
            time.sleep(0.5)
        assert firing is not None, f"no firing alert reached the webhook; got {received}"
        print(f"drift gauge -> webhook: {time.monotonic() - t0:.1f} s")
        auth, body = firing
        assert auth == "Bearer s3cret-token"
        alert = next(a for a in body["alerts"] if a["labels"]["alertname"] == "LoopmlDriftDetected")
        assert alert["labels"]["model"] == "fraud" and alert["labels"]["source"] == "loopml"
        # drift.share 0.25 stays under LoopmlDriftShareHigh's 0.5: that rule does not fire
        assert not any(a["labels"]["alertname"] == "LoopmlDriftShareHigh" for _, b in received for a in b["alerts"])
        assert "s3cret-token" not in (plat.root / "alertmanager" / "alertmanager.yml").read_text()
        assert plat.read_state()["alertmanager"]["webhook"].endswith("/alerts")  # kept for restarts
    finally:
        (plat.root / "prometheus" / "targets" / "test-server.json").unlink(missing_ok=True)
        plat.set_alert_webhook(None)
        hook.shutdown()
        metrics_server.shutdown()


def test_down_leaves_no_process_and_up_brings_back_the_same_data(local_platform, trained):
    from mlflow import MlflowClient

    plat = local_platform
    result, _ = trained
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    family = set()
    for comp in _state(plat).values():
        family |= _process_family(comp["pid"])
    assert len(family) >= 5
    out = _cli("platform", "down", "--dir", str(plat.root), env=env)
    assert out.returncode == 0, out.stderr
    assert not [pid for pid in family if pid_alive(pid)]
    s3_ports = _state(plat)["seaweedfs"]["ports"].values()
    assert not [p for port in s3_ports for p in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock")]
    assert _cli("platform", "down", "--dir", str(plat.root), env=env).returncode == 0  # idempotent
    assert _cli("platform", "status", "--dir", str(plat.root), env=env).returncode == 1
    # back up on the same folder: same URLs, the registered model is still there
    up = _cli("platform", "up", "--dir", str(plat.root), env=env)
    assert up.returncode == 0, up.stderr[-3000:]
    uri = plat.environment()["LOOPML_TRACKING_URI"]
    mv = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(result["model"], "champion")
    assert mv.run_id == result["run_id"]
