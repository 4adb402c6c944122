"""The remote tracking path against a real MLflow tracking server on 127.0.0.1.

The server is the session platform's ``mlflow server`` (the ``local_platform`` fixture:
PostgreSQL backend, artifacts proxied to SeaweedFS's S3 bucket), started once for every test
that needs one; a loopml workspace points at it with ``tracking_uri``; the pipeline, the
registry and the CLI go through the server, and every check reads back through the server's
HTTP API (and the bucket's S3 API for where the artifacts landed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

from loopml.config import Workspace


@pytest.fixture
def mlflow_server(local_platform):
    """(URI of the platform's MLflow tracking server on 127.0.0.1, a function listing the object
    keys of its artifact store). Read from the platform's state at test time: a component
    restarted by an earlier test may have moved to another port."""
    from loopml.platform.stack import BUCKET

    uri = local_platform.environment()["LOOPML_TRACKING_URI"]
    s3 = local_platform._components(local_platform.read_state())["seaweedfs"].client()

    def artifact_keys(prefix: str) -> list[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    return uri, artifact_keys


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The example fraud project, small: 1,000 rows and 40 boosting rounds. What is tested is the
    way to and from the server, not the model; the pipeline runs twice (here and in the CLI)."""
    import yaml

    from loopml.demo.project import scaffold_project

    proj = scaffold_project(tmp_path / "proj", rows=1000)
    raw = yaml.safe_load((proj / "loopml.yaml").read_text())
    raw["model"]["params"]["max_iter"] = 40
    # the server is shared by the session (other tests register "fraud" there): a name of its own
    raw["name"] = f"remote-{uuid.uuid4().hex[:8]}"
    (proj / "loopml.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return proj


def test_pipeline_registry_and_cli_through_a_remote_server(mlflow_server, project, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from loopml.loop.pipeline import run_pipeline
    from loopml.registry.client import CHALLENGER, CHAMPION, Registry
    from loopml.spec import load_spec

    uri, artifact_keys = mlflow_server
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
    # the artifacts live in the server's store (the platform's bucket), not in the workspace
    keys = artifact_keys(f"mlflow/{exp.experiment_id}/")
    assert any(k.endswith("/MLmodel") for k in keys), keys
    assert any(k.endswith("/gate.json") and result.run_id in k for k in keys), keys
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
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LOOPML_", "AWS_"))}
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
