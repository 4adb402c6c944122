"""The fake API server itself (tests/operator/fake_apiserver.py): the API-server behaviour the
operator tests rely on, checked through the same client the operator uses."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest

from loopml.operator.kube import Kube, KubeError
from tests.operator.conftest import start_cluster

NS = "ml"


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory.mktemp("fake-api"))
    yield cluster, Kube(str(cluster.kubeconfig))
    cluster.stop()


def md(name: str, **spec) -> dict:
    return {"apiVersion": "loopml.dev/v1", "kind": "ModelDeployment", "metadata": {"name": name, "namespace": NS},
            "spec": {"model": {"name": "fraud"}, **spec}}


def test_writes_are_stamped_like_the_real_server(fake):
    _, kube = fake
    a = kube.create(md("stamps"))
    meta = a["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z") and meta["generation"] == 1
    b = kube.patch("ModelDeployment", NS, "stamps", {"spec": {"runtime": "onnx"}})
    assert int(b["metadata"]["resourceVersion"]) > int(meta["resourceVersion"]) and b["metadata"]["generation"] == 2
    c = kube.patch("ModelDeployment", NS, "stamps", {"status": {"replicas": 1}}, subresource="status")
    assert c["status"] == {"replicas": 1} and c["metadata"]["generation"] == 2  # status does not move generation
    d = kube.patch("ModelDeployment", NS, "stamps", {"spec": {"runtime": "onnx"}, "status": {"replicas": 9}})
    assert d["status"] == {"replicas": 1}, "the main resource ignores status (status subresource)"
    assert d["metadata"]["resourceVersion"] == c["metadata"]["resourceVersion"], "a no-op writes nothing"
    assert (d["metadata"]["uid"], d["metadata"]["creationTimestamp"]) == (meta["uid"], meta["creationTimestamp"])


def test_conflicts_answer_409_and_422(fake):
    _, kube = fake
    a = kube.create(md("conflicts"))
    with pytest.raises(KubeError) as dup:
        kube.create(md("conflicts"))
    assert dup.value.status == 409
    kube.patch("ModelDeployment", NS, "conflicts", {"spec": {"runtime": "torch"}})
    stale = a["metadata"]["resourceVersion"]
    with pytest.raises(KubeError) as merge:
        kube.patch("ModelDeployment", NS, "conflicts", {"metadata": {"resourceVersion": stale}, "spec": {"runtime": "auto"}})
    assert merge.value.status == 409
    url = f"/apis/loopml.dev/v1/namespaces/{NS}/modeldeployments/conflicts"
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": stale},
           {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]}]
    with pytest.raises(KubeError) as jp:  # Kopf's guarded finalizer patch on a stale body
        kube.request("PATCH", url, body=ops, content_type="application/json-patch+json")
    assert jp.value.status == 422
    assert "finalizers" not in kube.get("ModelDeployment", NS, "conflicts")["metadata"]


def test_invalid_custom_resources_are_refused_with_422(fake):
    _, kube = fake
    with pytest.raises(KubeError) as bad:
        kube.create(md("bad", replicas={"min": 0, "max": 3}))
    assert bad.value.status == 422 and "replicas.min" in str(bad.value)
    with pytest.raises(KubeError) as cel:  # only the CRD's CEL rule compares two fields
        kube.create(md("upside-down", replicas={"min": 4, "max": 2}))
    assert cel.value.status == 422 and "replicas.max must be at least replicas.min" in str(cel.value)
    kube.create(md("good"))
    with pytest.raises(KubeError) as status:
        kube.patch("ModelDeployment", NS, "good", {"status": {"rollout": {"phase": "Sideways"}}}, subresource="status")
    assert status.value.status == 422


def test_delete_with_a_finalizer_waits_for_its_removal(fake):
    _, kube = fake
    kube.create({**md("final"), "metadata": {"name": "final", "namespace": NS, "finalizers": ["loopml.dev/finalizer"]}})
    kube.delete("ModelDeployment", NS, "final")
    marked = kube.get("ModelDeployment", NS, "final")
    assert marked["metadata"]["deletionTimestamp"]
    kube.patch("ModelDeployment", NS, "final", {"metadata": {"finalizers": []}})
    assert kube.get("ModelDeployment", NS, "final") is None


def test_a_watch_resumes_from_the_listed_resource_version(fake):
    cluster, kube = fake
    kube.create(md("old"))
    listed = kube.request("GET", f"/apis/loopml.dev/v1/namespaces/{NS}/modeldeployments")
    version = listed["metadata"]["resourceVersion"]
    assert version.isdigit()
    got: list[dict] = []

    def watch() -> None:
        url = f"{cluster.url}/apis/loopml.dev/v1/namespaces/{NS}/modeldeployments?watch=true&resourceVersion={version}"
        with urllib.request.urlopen(url, timeout=10) as r:
            for line in r:
                if line.strip():
                    got.append(json.loads(line))
                    return

    t = threading.Thread(target=watch)
    t.start()
    kube.create(md("new"))
    t.join(10)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in got] == [("ADDED", "new")]


def test_owned_objects_are_collected_with_their_owner(fake):
    _, kube = fake
    owner = kube.create(md("owner"))
    ref = {"apiVersion": "loopml.dev/v1", "kind": "ModelDeployment", "name": "owner", "uid": owner["metadata"]["uid"]}
    svc = kube.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "owned", "namespace": NS,
                                                                          "ownerReferences": [ref]}})
    kube.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "unowned", "namespace": NS}})
    kube.create({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
        "name": "grandchild", "namespace": NS, "ownerReferences": [{**ref, "kind": "Service", "name": "owned",
                                                                    "uid": svc["metadata"]["uid"]}]}})
    kube.delete("ModelDeployment", NS, "owner")
    assert kube.get("Service", NS, "owned") is None and kube.get("Deployment", NS, "grandchild") is None
    assert kube.get("Service", NS, "unowned") is not None
