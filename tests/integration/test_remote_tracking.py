"""The remote tracking path against a real MLflow tracking server on 127.0.0.1.

A ``mlflow server`` (SQLite backend, proxied artifacts) runs in a subprocess; a loopml
workspace points at it with ``tracking_uri``; the pipeline, the registry and the CLI
go through the server, and every check reads back through the server's HTTP API.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from loopml.config import Workspace

BIN = Path(sys.executable).parent
STARTUP_TIMEOUT_S = 45.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"mlflow server did not answer /health within {STARTUP_TIMEOUT_S:.0f} s:\n"
                       f"{log.read_text()[-3000:]}")


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """URI of a fresh MLflow tracking server bound to 127.0.0.1; stopped afterwards."""
    root = tmp_path / "server"
    root.mkdir()
    port = _free_port()
    log = root / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LOOPML_"))}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", str(root / "artifacts")],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(uri, proc, log)
        yield uri, root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=5)


def test_pipeline_registry_and_cli_through_a_remote_server(mlflow_server, project, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from loopml.loop.pipeline import run_pipeline
    from loopml.registry.client import CHALLENGER, CHAMPION, Registry
    from loopml.spec import load_spec

    uri, server_root = mlflow_server
    monkeypatch.delenv("LOOPML_TRACKING_URI", raising=False)
    monkeypatch.setenv("LOOPML_HOME", str(tmp_path / "ws"))
    ws = Workspace(tmp_path / "ws", tracking_uri_override=uri)
    assert ws.tracking_uri == uri
    spec = load_spec(project)
    name = spec.name

    result = run_pipeline(spec, ws, project_dir=project)
    assert result.version == "1" and result.promoted and not result.cached

    # everything below reads back through the server, not through the workspace
    server = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = server.get_experiment_by_name(name)
    assert exp is not None
    assert exp.artifact_location.startswith("mlflow-artifacts:"), exp.artifact_location  # the server decided
    run = server.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == exp.experiment_id
    assert run.data.params["estimator"] == spec.model.estimator
    assert int(run.data.params["train_rows"]) > 0
    for metric, value in result.metrics.items():
        assert run.data.metrics[metric] == pytest.approx(value)
    assert run.data.tags["loopml.snapshot_id"] == result.snapshot_id
    artifacts = {a.path for a in server.list_artifacts(result.run_id)}
    assert {"gate.json", "confusion_matrix.json"} <= artifacts
    # the artifacts live in the server's store, not in the workspace
    assert any((server_root / "artifacts").rglob("MLmodel"))
    assert not any((tmp_path / "ws" / "artifacts").rglob("MLmodel"))

    mv = server.get_model_version_by_alias(name, CHAMPION)
    assert mv.version == "1" and mv.run_id == result.run_id
    assert server.get_model_version_by_alias(name, CHALLENGER).version == "1"
    assert mv.tags["loopml.snapshot_id"] == result.snapshot_id

    # the registry loads the champion back through the server, and it predicts
    reg = Registry(ws)
    ref = reg.resolve(name)
    assert (ref.version, ref.run_id) == ("1", result.run_id)
    model = reg.load_native(ref)
    sig = reg.signature(ref)
    features = [c["name"] for c in sig["inputs"]]
    assert spec.data.target not in features and "amount" in features
    frame = pd.read_csv(project / "data" / "transactions.csv").head(20)
    preds = model.predict(frame[features])
    assert preds.shape == (20,)
    assert set(pd.unique(preds)) <= set(frame[spec.data.target].unique())

    # the CLI, in a fresh process with its own empty workspace, against the same server
    cli_home = tmp_path / "cli-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LOOPML_"))}
    env["LOOPML_HOME"] = str(cli_home)
    out = subprocess.run([sys.executable, "-m", "loopml.cli.main", "run", "-p", str(project),
                          "--tracking-uri", uri, "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    cli_result = json.loads(out.stdout[out.stdout.index("{"):])
    # its workspace has no cache, so it trains: version 2 on the server, gated against champion v1
    assert cli_result["version"] == "2" and not cli_result["cached"]
    assert cli_result["champion_version"] == "1"
    v2 = server.get_model_version(name, "2")
    assert v2.run_id == cli_result["run_id"] != result.run_id
    assert server.get_run(v2.run_id).info.status == "FINISHED"
    assert server.get_model_version_by_alias(name, CHALLENGER).version == "2"
    assert server.get_model_version_by_alias(name, CHAMPION).version == ("2" if cli_result["promoted"] else "1")
    assert not any(cli_home.rglob("mlflow.db"))  # nothing tracked locally

    # promote and roll back by hand through the server
    change = reg.promote(name, "2", "remote promotion")
    assert change.version == "2"
    assert server.get_model_version_by_alias(name, CHAMPION).version == "2"
    assert server.get_model_version(name, "2").tags["loopml.champion_why"] == "remote promotion"
    back = reg.rollback(name, "remote rollback")
    assert (back.previous, back.version, back.action) == ("2", "1", "rollback")
    assert server.get_model_version_by_alias(name, CHAMPION).version == "1"
    assert server.get_model_version(name, "1").tags["loopml.champion_why"] == "remote rollback"
    assert [c.version for c in reg.history(name) if c.alias == CHAMPION] == ["1", "2", "1"]

    # the first workspace, same data again: a cache hit, no new run, no new version
    runs_before = len(server.search_runs([exp.experiment_id]))
    again = run_pipeline(spec, ws, project_dir=project)
    assert again.cached and again.version == "1" and again.run_id == result.run_id
    assert len(server.search_model_versions(f"name = '{name}'")) == 2
    assert len(server.search_runs([exp.experiment_id])) == runs_before
    assert not (tmp_path / "ws" / "mlflow.db").exists()
