"""The operator's registry hooks (operator/hooks.py) on a real MLflow registry, reading the
project's ConfigMap from the fake API server (tests/operator/fake_apiserver.py)."""

from __future__ import annotations

import pytest

from loopml.operator.hooks import RegistryHooks
from loopml.operator.kube import Kube
from loopml.registry.client import Registry
from tests.operator.conftest import start_cluster


@pytest.fixture
def kube(tmp_path):
    cluster = start_cluster(tmp_path / "cluster")
    yield Kube(str(cluster.kubeconfig))
    cluster.stop()


def tj(register_as: str) -> dict:
    return {"metadata": {"name": "nightly", "namespace": "ml"},
            "spec": {"project": {"configMap": "fraud-project", "key": "loopml.yaml"}, "registerAs": register_as}}


def test_a_finished_job_points_its_alias_at_the_trained_version_and_a_rollout_promotes(registered_model, kube):
    ws, name = registered_model
    kube.request("POST", "/api/v1/namespaces/ml/configmaps", body={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fraud-project", "namespace": "ml"},
        "data": {"loopml.yaml": f"name: {name}\n"}})
    reg = Registry(ws)
    # what `loopml train` in the job's pod does: a new version (v1's files again), alias challenger
    v1 = reg.resolve(name, "1")
    v2 = reg.register(v1.source, name, v1.run_id, tags={})
    reg.set_alias(name, "challenger", v2.version, why="trained by the job")
    hooks = RegistryHooks(ws, kube)
    assert hooks.register_model(tj("candidate")) == v2.version == "2"
    assert reg.resolve(name, "candidate").version == "2"
    assert reg.resolve(name, "champion").version == "1"
    hooks.promote(name, "candidate")
    assert reg.resolve(name, "champion").version == "2"
    last = reg.history(name)[-1]
    assert (last.alias, last.version) == ("champion", "2") and "every step passed" in last.why


def test_a_missing_configmap_is_named(registered_model, kube):
    ws, _ = registered_model
    with pytest.raises(LookupError, match="ConfigMap fraud-project"):
        RegistryHooks(ws, kube).register_model(tj("challenger"))
