"""The generated RBAC against what the operator really asks for: the operator runs under Kopf
against the fake API server (tests/operator/fake_apiserver.py, not Kubernetes) through a
ModelDeployment's life and TrainingJobs admitted, preempted, finished and on KubeRay; every
request it makes is recorded and must be one the chart's Role and ClusterRole allow, as the
API server's RBAC authorizer would decide it."""

from __future__ import annotations

import json

import pytest

from loopml.deploy import rbac
from loopml.deploy.values import check, default_values, merge
from tests.operator.conftest import start_cluster, wait_for
from tests.operator.fake_apiserver import FakeApiServer

NS = "ml"
OPERATOR_TOKEN = "operator-token"  # tells the operator's requests from the test's own


def attributes(method: str, path: str, query: dict) -> tuple:
    """A request as RBAC sees it: ("url", verb, path) or ("resource", verb, group, resource, namespace)."""
    parts = path.strip("/").split("/")
    if (parts[0] == "api" and len(parts) < 3) or (parts[0] == "apis" and len(parts) < 4):
        return ("url", method.lower(), path)
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    named = len(rest) > 1
    verb = {"GET": "get" if named else ("watch" if query.get("watch") in ("true", "1") else "list"),
            "POST": "create", "PATCH": "patch", "PUT": "update",
            "DELETE": "delete" if named else "deletecollection"}[method]
    return ("resource", verb, group, resource, namespace)


def allowed(request: tuple, objects: list[dict]) -> bool:
    """Whether a binding in ``objects`` grants ``request`` (RBAC: any rule of any bound role)."""
    for role in (o for o in objects if o["kind"] in ("ClusterRole", "Role")):
        where = role["metadata"].get("namespace")
        for r in role["rules"]:
            if request[0] == "url":
                if request[1] in r["verbs"] and any(u == request[2] or (u.endswith("*") and request[2].startswith(u[:-1]))
                                                    for u in r.get("nonResourceURLs", [])):
                    return True
                continue
            _, verb, group, resource, namespace = request
            if where is not None and namespace != where:  # a Role grants nothing outside its namespace
                continue
            if verb in r["verbs"] and group in r.get("apiGroups", []) and resource in r.get("resources", []):
                return True
    return False


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """(method, path, query) of every request the operator made through the scenarios below."""
    from loopml.operator.app import OperatorConfig, OperatorThread
    from loopml.operator.kube import Kube
    from loopml.serve.policy_store import PolicyFiles

    log: list[tuple[str, str, dict]] = []
    mp = pytest.MonkeyPatch()
    original = FakeApiServer.__call__

    async def recording(self, raw_request):
        if raw_request.headers.get("Authorization", "") == f"Bearer {OPERATOR_TOKEN}":
            log.append((raw_request.method, raw_request.path, dict(raw_request.query)))
        return await original(self, raw_request)

    mp.setattr(FakeApiServer, "__call__", recording)
    folder = tmp_path_factory.mktemp("rbac-audit")
    cluster = start_cluster(folder)
    config = json.loads(cluster.kubeconfig.read_text())
    config["users"][0]["user"]["token"] = OPERATOR_TOKEN
    (folder / "operator-kubeconfig").write_text(json.dumps(config))
    kube = Kube(str(cluster.kubeconfig))
    for i in range(2):
        kube.request("POST", "/api/v1/nodes", body={"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"n{i}"}})
        kube.patch("Node", None, f"n{i}", {"status": {"allocatable": {"cpu": "8", "memory": "64Gi",
                                                                       "nvidia.com/gpu": "4"}}}, subresource="status")
    cfg = OperatorConfig(kube=Kube(str(folder / "operator-kubeconfig")), policies=PolicyFiles(folder / "home"),
                         namespaces=(NS,), settings={"image": "registry.example/loopml:1.0"},
                         register_model=lambda body: "7", admission_interval=0.2, discovery_ttl=0.0)
    op = OperatorThread(cfg).start()
    try:
        _scenarios(kube, cluster)
    finally:
        op.stop()
        cluster.stop()
        mp.undo()
    return log


def _tj(name: str, workers: int, gpu: int, priority: int = 0) -> dict:
    return {"apiVersion": "loopml.dev/v1", "kind": "TrainingJob", "metadata": {"name": name, "namespace": NS},
            "spec": {"project": {"configMap": "fraud-project"}, "image": "registry.example/train:1",
                     "workers": workers, "resources": {"cpu": "1", "memory": "4Gi", "gpu": gpu}, "priority": priority}}


def _phase(kube, name: str, phase: str):
    return lambda: ((kube.get("TrainingJob", NS, name) or {}).get("status") or {}).get("phase") == phase


def _scenarios(kube, cluster) -> None:
    # a ModelDeployment: children, status, a spec change, deletion through the finalizer
    kube.create({"apiVersion": "loopml.dev/v1", "kind": "ModelDeployment", "metadata": {"name": "fraud", "namespace": NS},
                 "spec": {"model": {"name": "fraud"}, "replicas": {"min": 1, "max": 2}}})
    wait_for(lambda: kube.get("HorizontalPodAutoscaler", NS, "fraud"), "the HPA")
    wait_for(lambda: (kube.get("ModelDeployment", NS, "fraud").get("status") or {}).get("conditions"), "a status")
    kube.patch("ModelDeployment", NS, "fraud", {"spec": {"replicas": {"max": 4}}})
    wait_for(lambda: kube.get("HorizontalPodAutoscaler", NS, "fraud")["spec"]["maxReplicas"] == 4, "the HPA update")
    kube.delete("ModelDeployment", NS, "fraud")
    wait_for(lambda: kube.get("ModelDeployment", NS, "fraud") is None, "the finalizer to go")
    # TrainingJobs: admitted, preempted by a higher priority, run to success
    kube.create(_tj("low", workers=2, gpu=4))
    wait_for(_phase(kube, "low", "Admitted"), "low admitted")
    kube.create(_tj("high", workers=1, gpu=4, priority=10))
    wait_for(_phase(kube, "low", "Preempted"), "low preempted")
    kube.patch("Job", NS, "high", {"status": {"active": 0, "succeeded": 1, "conditions": [
        {"type": "Complete", "status": "True"}]}}, subresource="status")
    wait_for(_phase(kube, "high", "Succeeded"), "high succeeded")
    # KubeRay served: a RayJob, admitted (unsuspended) by the operator
    cluster.call(lambda api: api.declare("ray.io/v1", "rayjobs", "RayJob", status=True))
    kube.create(_tj("on-ray", workers=2, gpu=0))
    wait_for(_phase(kube, "on-ray", "Admitted"), "the RayJob admitted")


def _namespace_mode() -> list[dict]:
    return rbac.objects(check(merge(default_values(), {"operator": {"watchNamespace": NS}})))


def test_the_operator_made_the_requests_the_scenarios_need(recorded):
    seen = {attributes(*r) for r in recorded}
    for expected in [("resource", "watch", "loopml.dev", "modeldeployments", NS),
                     ("resource", "patch", "loopml.dev", "modeldeployments/status", NS),
                     ("resource", "create", "apps", "deployments", NS),
                     ("resource", "patch", "batch", "jobs", NS),
                     ("resource", "create", "ray.io", "rayjobs", NS),
                     ("resource", "list", "", "nodes", None),
                     ("resource", "create", "", "events", NS)]:
        assert expected in seen, (expected, sorted(seen))


def test_every_request_of_the_operator_is_allowed_by_the_generated_rbac(recorded):
    objects = _namespace_mode()
    denied = sorted({attributes(*r) for r in recorded if not allowed(attributes(*r), objects)})
    assert denied == []
    # the same requests under the ClusterRole of the all-namespaces mode
    everywhere = rbac.objects(check(default_values()))
    assert [a for a in {attributes(*r) for r in recorded} if not allowed(a, everywhere)] == []


def test_the_authorizer_here_denies_what_rbac_denies():
    """The check above can fail: outside the Role's namespace, an unlisted verb or resource,
    an unlisted URL are denied."""
    objects = _namespace_mode()
    assert allowed(("resource", "create", "batch", "jobs", NS), objects)
    assert not allowed(("resource", "create", "batch", "jobs", "other"), objects)
    assert not allowed(("resource", "delete", "batch", "jobs", NS), objects)
    assert not allowed(("resource", "get", "", "secrets", NS), objects)
    assert not allowed(("resource", "list", "batch", "jobs", None), objects)  # every namespace: not in this mode
    assert allowed(("url", "get", "/apis/ray.io/v1"), objects)
    assert not allowed(("url", "get", "/metrics"), objects)
    assert attributes("GET", "/apis/batch/v1/namespaces/ml/jobs", {"watch": "true"}) == (
        "resource", "watch", "batch", "jobs", "ml")
    assert attributes("PATCH", "/apis/loopml.dev/v1/namespaces/ml/trainingjobs/x/status", {}) == (
        "resource", "patch", "loopml.dev", "trainingjobs/status", "ml")
    assert attributes("GET", "/api/v1/nodes", {}) == ("resource", "list", "", "nodes", None)
