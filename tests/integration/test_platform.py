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
    assert _cli("platform", "down", "--dir", str(plat.root), env=env).returncode == 0  # idempotent
    assert _cli("platform", "status", "--dir", str(plat.root), env=env).returncode == 1
    # back up on the same folder: same URLs, the registered model is still there
    up = _cli("platform", "up", "--dir", str(plat.root), env=env)
    assert up.returncode == 0, up.stderr[-3000:]
    uri = plat.environment()["LOOPML_TRACKING_URI"]
    mv = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(result["model"], "champion")
    assert mv.run_id == result["run_id"]
