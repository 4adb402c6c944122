"""The TrainingJob handlers under Kopf against the fake API server (tests/operator/fake_apiserver.py):
gang admission, preemption, the child's progress, KubeRay and Kueue discovered through the API."""

from __future__ import annotations

import pytest

from loopml.operator.app import OperatorConfig, OperatorThread
from loopml.operator.kube import Kube
from tests.operator.conftest import start_cluster, wait_for

NS = "ml"
GPU_NODES = 2  # 8 CPUs, 64Gi and 4 GPUs each


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from loopml.serve.policy_store import PolicyFiles

    folder = tmp_path_factory.mktemp("operator-tj")
    cluster = start_cluster(folder)
    kube = Kube(str(cluster.kubeconfig))
    for i in range(GPU_NODES):  # the kubelet's part: register the node, then report its status
        kube.request("POST", "/api/v1/nodes", body={"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"gpu-{i}"}})
        kube.patch("Node", None, f"gpu-{i}", {"status": {"allocatable": {"cpu": "8", "memory": "64Gi",
                                                                          "nvidia.com/gpu": "4"}}}, subresource="status")
    registered: list[dict] = []

    def register(body: dict) -> str:
        if body["spec"]["registerAs"] == "unreachable":
            raise RuntimeError("registry unavailable")
        registered.append(body)
        return "7"

    cfg = OperatorConfig(kube=Kube(str(cluster.kubeconfig)), policies=PolicyFiles(folder / "home"),
                         namespaces=(NS,), register_model=register, admission_interval=0.2, discovery_ttl=0.0)
    op = OperatorThread(cfg).start()
    yield {"kube": kube, "cluster": cluster, "registered": registered}
    op.stop()
    cluster.stop()


def tj(name: str, workers: int, gpu: int, priority: int = 0, **spec) -> dict:
    return {"apiVersion": "loopml.dev/v1", "kind": "TrainingJob", "metadata": {"name": name, "namespace": NS},
            "spec": {"project": {"configMap": "fraud-project", "key": "loopml.yaml"}, "image": "registry.example/train:1",
                     "workers": workers, "resources": {"cpu": "1", "memory": "4Gi", "gpu": gpu},
                     "priority": priority, **{"registerAs": "challenger", **spec}}}


def st(kube, name: str) -> dict:
    return (kube.get("TrainingJob", NS, name) or {}).get("status") or {}


def cond(kube, name: str, type_: str) -> dict:
    return next((c for c in st(kube, name).get("conditions") or () if c["type"] == type_), {})


def events(kube, name: str) -> list[dict]:
    items = kube.request("GET", f"/api/v1/namespaces/{NS}/events").get("items") or []
    return [e for e in items if (e.get("involvedObject") or {}).get("name") == name]


def phase_is(kube, name: str, phase: str):
    return lambda: st(kube, name).get("phase") == phase


def finish(kube, *names: str) -> None:
    """Delete the jobs; their children go with them (owner references)."""
    for n in names:
        kube.delete("TrainingJob", NS, n)
    wait_for(lambda: all(kube.get("TrainingJob", NS, n) is None for n in names), "the jobs to be gone")
    assert all(kube.get("Job", NS, n) is None for n in names)


def test_a_gang_admitted_job_is_unsuspended(env):
    kube = env["kube"]
    cr = kube.create(tj("small", workers=2, gpu=2))
    job = wait_for(lambda: kube.get("Job", NS, "small"), "the indexed Job")
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == ("Indexed", 2, 2)
    assert job["metadata"]["ownerReferences"][0]["uid"] == cr["metadata"]["uid"]
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "1", "memory": "4Gi", "nvidia.com/gpu": "2"}
    svc = kube.get("Service", NS, "small-workers")
    assert svc["spec"]["clusterIP"] == "None" and svc["metadata"]["ownerReferences"][0]["kind"] == "TrainingJob"
    wait_for(phase_is(kube, "small", "Admitted"), "Admitted", extra=lambda: st(kube, "small"))
    assert kube.get("Job", NS, "small")["spec"]["suspend"] is False
    s = st(kube, "small")
    assert s["backend"] == "indexed-job" and s["admittedAt"]
    assert cond(kube, "small", "Admitted")["status"] == "True"
    placed = kube.get("TrainingJob", NS, "small")["metadata"]["annotations"]["loopml.dev/placement"].split(",")
    assert len(placed) == 2 and set(placed) <= {"gpu-0", "gpu-1"}
    wait_for(lambda: any(e["reason"] == "Admitted" for e in events(kube, "small")), "the Admitted event")
    finish(kube, "small")


def test_a_job_too_big_for_the_free_room_waits_whole(env):
    kube = env["kube"]
    kube.create(tj("fits", workers=1, gpu=4))
    wait_for(phase_is(kube, "fits", "Admitted"), "Admitted")
    kube.create(tj("too-big", workers=2, gpu=4))  # 8 GPUs: only 4 are free, and no half start
    wait_for(lambda: cond(kube, "too-big", "Admitted").get("reason") == "Waiting", "a waiting reason",
             extra=lambda: st(kube, "too-big"))
    assert st(kube, "too-big")["phase"] == "Queued"
    assert kube.get("Job", NS, "too-big")["spec"]["suspend"] is True
    # an operator killed mid-admission left a placement and a running Job behind: undone
    kube.patch("TrainingJob", NS, "too-big", {"metadata": {"annotations": {"loopml.dev/placement": "gpu-0,gpu-1"}}})
    kube.patch("Job", NS, "too-big", {"spec": {"suspend": False}})
    wait_for(lambda: kube.get("Job", NS, "too-big")["spec"]["suspend"] is True, "the Job suspended again")
    assert "loopml.dev/placement" not in (kube.get("TrainingJob", NS, "too-big")["metadata"].get("annotations") or {})
    assert st(kube, "too-big")["phase"] == "Queued"
    finish(kube, "fits", "too-big")


def test_a_higher_priority_job_preempts_a_lower_one(env):
    kube = env["kube"]
    kube.create(tj("low", workers=2, gpu=4, priority=0))
    wait_for(phase_is(kube, "low", "Admitted"), "low admitted", extra=lambda: st(kube, "low"))
    assert kube.get("Job", NS, "low")["spec"]["suspend"] is False
    kube.create(tj("high", workers=1, gpu=4, priority=10))
    wait_for(phase_is(kube, "high", "Admitted"), "high admitted", extra=lambda: (st(kube, "high"), st(kube, "low")))
    wait_for(phase_is(kube, "low", "Preempted"), "low preempted")
    assert kube.get("Job", NS, "low")["spec"]["suspend"] is True
    assert kube.get("Job", NS, "high")["spec"]["suspend"] is False
    pre = cond(kube, "low", "Preempted")
    assert (pre["status"], pre["reason"]) == ("True", "HigherPriority")
    assert cond(kube, "low", "Admitted")["status"] == "False"
    assert "loopml.dev/placement" not in (kube.get("TrainingJob", NS, "low")["metadata"].get("annotations") or {})
    warn = wait_for(lambda: [e for e in events(kube, "low") if e["reason"] == "Preempted"], "the Preempted event")
    assert warn[0]["type"] == "Warning"

    # the job's own progress: running, then done, and its model registered as challenger
    kube.patch("Job", NS, "high", {"status": {"active": 1}}, subresource="status")
    wait_for(phase_is(kube, "high", "Running"), "Running")
    kube.patch("Job", NS, "high", {"status": {"active": 0, "succeeded": 1, "conditions": [
        {"type": "Complete", "status": "True"}]}}, subresource="status")
    wait_for(phase_is(kube, "high", "Succeeded"), "Succeeded")
    assert st(kube, "high")["modelVersion"] == "7"
    assert [b["metadata"]["name"] for b in env["registered"]] == ["high"]
    # the room of the finished job is free again: the preempted job is admitted back
    wait_for(phase_is(kube, "low", "Admitted"), "low admitted again", extra=lambda: st(kube, "low"))
    assert cond(kube, "low", "Preempted")["status"] == "False"
    finish(kube, "low", "high")


def test_a_failed_registration_still_finishes_the_job_and_says_why(env):
    kube = env["kube"]
    kube.create(tj("orphan", workers=1, gpu=0, registerAs="unreachable"))
    wait_for(phase_is(kube, "orphan", "Admitted"), "Admitted")
    kube.patch("Job", NS, "orphan", {"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}},
               subresource="status")
    wait_for(phase_is(kube, "orphan", "Succeeded"), "Succeeded")
    assert "modelVersion" not in st(kube, "orphan")
    assert "registry unavailable" in cond(kube, "orphan", "Succeeded")["message"]
    warn = wait_for(lambda: [e for e in events(kube, "orphan") if e["reason"] == "RegistrationFailed"], "the warning")
    assert warn[0]["type"] == "Warning"
    finish(kube, "orphan")


def test_a_namespace_quota_holds_a_job(env):
    kube = env["kube"]
    kube.request("POST", f"/api/v1/namespaces/{NS}/resourcequotas", body={
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpus", "namespace": NS},
        "spec": {"hard": {"requests.nvidia.com/gpu": "2"}}})
    try:
        kube.create(tj("over-quota", workers=1, gpu=4))
        wait_for(lambda: "quota" in cond(kube, "over-quota", "Admitted").get("message", ""), "a quota reason",
                 extra=lambda: st(kube, "over-quota"))
        assert st(kube, "over-quota")["phase"] == "Queued"
    finally:
        kube.request("DELETE", f"/api/v1/namespaces/{NS}/resourcequotas/gpus")
    wait_for(phase_is(kube, "over-quota", "Admitted"), "admitted once the quota is gone")
    finish(kube, "over-quota")


def test_kuberay_and_kueue_are_discovered_through_the_api(env):
    kube, cluster = env["kube"], env["cluster"]
    # KubeRay and Kueue "installed": the API server now serves their groups
    cluster.call(lambda api: (api.declare("ray.io/v1", "rayjobs", "RayJob", status=True),
                              api.declare("kueue.x-k8s.io/v1beta1", "localqueues", "LocalQueue")))
    kube.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body={  # Kopf watches CRDs
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "rayjobs.ray.io"},
        "spec": {"group": "ray.io", "scope": "Namespaced", "names": {"plural": "rayjobs", "kind": "RayJob"},
                 "versions": [{"name": "v1", "served": True, "storage": True}]}})
    cr = kube.create(tj("on-ray", workers=3, gpu=0))
    ray = wait_for(lambda: kube.request("GET", f"/apis/ray.io/v1/namespaces/{NS}/rayjobs/on-ray"), "the RayJob")
    assert ray["metadata"]["ownerReferences"][0]["uid"] == cr["metadata"]["uid"]
    assert ray["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 3
    assert kube.get("Job", NS, "on-ray") is None
    wait_for(phase_is(kube, "on-ray", "Admitted"), "the RayJob admitted", extra=lambda: st(kube, "on-ray"))
    assert st(kube, "on-ray")["backend"] == "rayjob"
    assert kube.request("GET", f"/apis/ray.io/v1/namespaces/{NS}/rayjobs/on-ray")["spec"]["suspend"] is False
    # KubeRay's part: the job runs; the operator, now watching RayJobs too, reports it
    kube.request("PATCH", f"/apis/ray.io/v1/namespaces/{NS}/rayjobs/on-ray/status",
                 body={"status": {"jobStatus": "RUNNING"}}, content_type="application/merge-patch+json")
    wait_for(phase_is(kube, "on-ray", "Running"), "the RayJob running", extra=lambda: st(kube, "on-ray"))

    # with a queue and Kueue served, Kueue admits: the operator leaves the job suspended
    kube.create(tj("queued", workers=1, gpu=1, queue="team-q"))
    rj = wait_for(lambda: kube.request("GET", f"/apis/ray.io/v1/namespaces/{NS}/rayjobs/queued"), "the queued RayJob")
    assert rj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-q" and rj["spec"]["suspend"] is True
    wait_for(lambda: "Kueue" in cond(kube, "queued", "Admitted").get("message", ""), "waiting for Kueue")
    assert st(kube, "queued")["phase"] == "Queued"
    finish(kube, "on-ray", "queued")

