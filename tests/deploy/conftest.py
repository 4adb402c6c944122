"""Shared fixtures: one project, its values, and the helm binary scripts/get-helm.py installs."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# sentinel credentials in the environment: a renderer that copied env into manifests would leak them
SENTINELS = {"LOOPML_ADMIN_TOKEN": "sentinel-admin-token-3f9a", "AWS_SECRET_ACCESS_KEY": "sentinel-s3-secret-7c21",
             "LOOPML_STATE_URI": "postgresql://loopml:sentinel-db-pass-55e0@db:5432/loopml",
             "AWS_ACCESS_KEY_ID": "sentinel-access-key-91b4"}

SPEC = """\
name: fraud
task: classification
data:
  source: data/transactions.csv
  target: is_fraud
model:
  estimator: sklearn.linear_model.LogisticRegression
serving:
  port: 9000
  grpc_port: 9001
  max_inflight: 40
monitoring:
  alerts:
    - name: FraudDrift
      metric: drift.share
      threshold: 0.3
      for_windows: 3
      severity: critical
    - name: AmountDrift
      metric: drift.feature.amount
      threshold: 0.2
      model: fraud
"""


def helm_binary() -> str:
    """The helm beside the venv's python (where scripts/get-helm.py puts it), else on PATH; a test
    needing it fails, never skips, when it is missing."""
    beside = Path(sys.executable).parent / "helm"
    found = str(beside) if beside.exists() else shutil.which("helm")
    if not found:
        pytest.fail("helm is not installed: run 'python3 scripts/get-helm.py' (puts it in .venv/bin/helm)")
    return found


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("project")
    (d / "loopml.yaml").write_text(SPEC)
    return d


@pytest.fixture(scope="session")
def deployed(project, tmp_path_factory):
    """``loopml deploy k8s`` output for the project, with sentinel credentials in the environment."""
    from loopml.deploy.chart import project_values, write

    saved = {k: os.environ.get(k) for k in SENTINELS}
    os.environ.update(SENTINELS)
    try:
        values = project_values(project)
        out = tmp_path_factory.mktemp("k8s")
        paths = write(values, out)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return values, paths
