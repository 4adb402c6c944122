"""``loopml operator``: usage errors, and a real run against the fake API server (tests/operator/fake_apiserver.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from loopml.operator.kube import Kube
from tests.operator.conftest import start_cluster, wait_for

LOOPML = [sys.executable, "-c", "from loopml.cli.main import main; main()"]


@pytest.mark.parametrize("args, says", [
    ([], "give --namespace NS (repeatable) or --all-namespaces"),
    (["-n", "ml", "--all-namespaces"], "give --namespace NS (repeatable) or --all-namespaces"),
    (["-n", "ml", "--kubeconfig", "/no/such/kubeconfig"], "--kubeconfig: /no/such/kubeconfig is not a file"),
])
def test_bad_usage_exits_2_with_one_line(args, says, tmp_path):
    r = subprocess.run([*LOOPML, "operator", *args, "--home", str(tmp_path / "ws")], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "KUBECONFIG": str(tmp_path / "none")})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("login", ["--kubeconfig", "KUBECONFIG"])
def test_the_operator_runs_cluster_wide_and_stops_on_sigterm(login, tmp_path):
    """Both logins: the explicit file (the operator's client hands its credentials to Kopf) and
    the default chain (Kopf's and the client's own loaders; here KUBECONFIG names the fake)."""
    cluster = start_cluster(tmp_path)
    kube = Kube(str(cluster.kubeconfig))
    health = f"http://127.0.0.1:{_free_port()}/healthz"
    explicit = ["--kubeconfig", str(cluster.kubeconfig)] if login == "--kubeconfig" else []
    env_file = tmp_path / "none" if login == "--kubeconfig" else cluster.kubeconfig
    proc = subprocess.Popen([*LOOPML, "operator", "--all-namespaces", *explicit,
                             "--home", str(tmp_path / "ws"), "--image", "registry.example/loopml:2",
                             "--liveness", health],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "KUBECONFIG": str(env_file)})
    try:
        kube.create({"apiVersion": "loopml.dev/v1", "kind": "ModelDeployment",
                     "metadata": {"name": "cli", "namespace": "ml"}, "spec": {"model": {"name": "cli-model"}}})
        dep = wait_for(lambda: kube.get("Deployment", "ml", "cli-server"), "the Deployment", timeout_s=60)
        assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/loopml:2"
        # the traffic policy lands in the workspace, where `loopml serve` replicas read it
        wait_for(lambda: (tmp_path / "ws" / "run" / "traffic-cli-model.json").is_file(), "the policy file")
        # the chart's livenessProbe asks Kopf's health endpoint
        with urllib.request.urlopen(health, timeout=10) as r:
            assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        cluster.stop()
    assert proc.returncode == 0, err[-2000:]
    assert "rollouts are not driven" in err
    assert "Handler 'reconcile' succeeded" in err  # Kopf's log, configured
