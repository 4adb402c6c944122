"""The ModelDeployment handlers under Kopf against the fake API server (tests/operator/fake_apiserver.py).

Traffic policies go to a PostgreSQL state store's ``policies`` table, where ``loopml serve``
replicas on several machines read them (tests/cli/test_operator.py covers the workspace files)."""

from __future__ import annotations

import time

import pytest

from loopml.operator.app import OperatorConfig, OperatorThread
from loopml.operator.evidence import PrometheusEvidence
from loopml.operator.kube import Kube
from loopml.serve.policy_store import PolicyFiles
from tests.operator.conftest import start_cluster, wait_for

NS = "ml"


@pytest.fixture(scope="module")
def env(tmp_path_factory, metrics_page, pg_database):
    from loopml.serve.policy_store import PolicyFiles

    folder = tmp_path_factory.mktemp("operator-md")
    state_uri = pg_database()
    cluster = start_cluster(folder)
    kube = Kube(str(cluster.kubeconfig))
    promoted: list[tuple[str, str]] = []
    cfg = OperatorConfig(kube=Kube(str(cluster.kubeconfig)), policies=PolicyFiles(folder / "home", state_uri),
                         namespaces=(NS,), settings={"image": "registry.example/loopml:1.0"},
                         evidence=PrometheusEvidence(metrics_page.url),
                         promote=lambda model, ref: promoted.append((model, ref)), rollout_interval=0.2)
    op = OperatorThread(cfg).start()
    yield {"kube": kube, "store": state_uri, "page": metrics_page, "promoted": promoted, "cluster": cluster}
    op.stop()
    cluster.stop()


def md(name: str, model: str, **spec) -> dict:
    return {"apiVersion": "loopml.dev/v1", "kind": "ModelDeployment", "metadata": {"name": name, "namespace": NS},
            "spec": {"model": {"name": model, "alias": "champion"}, "replicas": {"min": 1, "max": 3},
                     "autoscaling": {"metric": "inflight", "target": 64}, **spec}}


def status(kube, name: str) -> dict:
    return (kube.get("ModelDeployment", NS, name) or {}).get("status") or {}


def cond(kube, name: str, type_: str) -> dict | None:
    return next((c for c in status(kube, name).get("conditions") or () if c["type"] == type_), None)


def events(kube, name: str) -> list[dict]:
    items = kube.request("GET", f"/api/v1/namespaces/{NS}/events").get("items") or []
    return [e for e in items if (e.get("involvedObject") or {}).get("name") == name]


def policy(state_uri: str, model: str) -> dict | None:
    """The model's policy as a replica reads it from the state store."""
    got = PolicyFiles("/nonexistent", state_uri).changed([model])
    return got[model].to_dict() if model in got else None


def test_create_makes_children_owned_by_the_cr(env):
    kube = env["kube"]
    cr = kube.create(md("fraud", "fraud"))
    dep = wait_for(lambda: kube.get("Deployment", NS, "fraud-server"), "the server Deployment")
    svc = wait_for(lambda: kube.get("Service", NS, "fraud"), "the Service")
    hpa = wait_for(lambda: kube.get("HorizontalPodAutoscaler", NS, "fraud"), "the HPA")
    for child in (dep, svc, hpa):
        (ref,) = child["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == ("ModelDeployment", "fraud",
                                                                            cr["metadata"]["uid"], True)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/loopml:1.0"
    assert container["args"][-2:] == ["--model", "fraud@champion"]
    assert [p["port"] for p in svc["spec"]["ports"]] == [8080, 8081]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    st = wait_for(lambda: status(kube, "fraud").get("observedGeneration") == 1 and status(kube, "fraud"), "status")
    assert st["rollout"]["phase"] == "Idle"
    ready = cond(kube, "fraud", "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "MinimumReplicasUnavailable")
    assert "loopml.dev/finalizer" in kube.get("ModelDeployment", NS, "fraud")["metadata"]["finalizers"]


def test_replicas_change_reaches_the_hpa_and_ready_follows_the_deployment(env):
    kube = env["kube"]
    wait_for(lambda: kube.get("HorizontalPodAutoscaler", NS, "fraud"), "the HPA")
    kube.patch("ModelDeployment", NS, "fraud", {"spec": {"replicas": {"min": 2, "max": 5}}})
    wait_for(lambda: kube.get("HorizontalPodAutoscaler", NS, "fraud")["spec"]["minReplicas"] == 2, "minReplicas 2")
    assert kube.get("HorizontalPodAutoscaler", NS, "fraud")["spec"]["maxReplicas"] == 5
    wait_for(lambda: status(kube, "fraud").get("observedGeneration") == 2, "observedGeneration 2")
    first = cond(kube, "fraud", "Ready")
    # the deployment controller's part, played by the test: two pods became ready
    kube.patch("Deployment", NS, "fraud-server", {"status": {"replicas": 2, "readyReplicas": 2}}, subresource="status")
    wait_for(lambda: (cond(kube, "fraud", "Ready") or {}).get("status") == "True", "Ready=True")
    st = status(kube, "fraud")
    assert (st["replicas"], st["readyReplicas"]) == (2, 2)
    assert cond(kube, "fraud", "Ready")["reason"] == "MinimumReplicasAvailable"
    assert first["status"] == "False"


def test_manual_traffic_split_reaches_the_policy_store(env):
    kube = env["kube"]
    wait_for(lambda: kube.get("ModelDeployment", NS, "fraud"), "the CR")
    kube.patch("ModelDeployment", NS, "fraud", {"spec": {"traffic": {"challengerWeight": 0.2}}})
    got = wait_for(lambda: (policy(env["store"], "fraud") or {}).get("weight") == 0.2 and policy(env["store"], "fraud"),
                   "a canary policy")
    assert (got["kind"], got["challenger"]) == ("canary", "challenger")


def test_delete_runs_the_finalizer_clean_up(env):
    kube = env["kube"]
    kube.create(md("gone", "gone-model", traffic={"challengerWeight": 0.5}))
    wait_for(lambda: (policy(env["store"], "gone-model") or {}).get("kind") == "canary", "the canary policy")
    wait_for(lambda: "loopml.dev/finalizer" in (kube.get("ModelDeployment", NS, "gone")["metadata"].get("finalizers") or ()),
             "the finalizer")
    wait_for(lambda: kube.get("Deployment", NS, "gone-server"), "the children")
    kube.delete("ModelDeployment", NS, "gone")
    wait_for(lambda: kube.get("ModelDeployment", NS, "gone") is None, "the CR to be gone")
    assert policy(env["store"], "gone-model")["kind"] == "single"
    # the children follow through their owner references
    assert [kube.get(k, NS, n) for k, n in (("Deployment", "gone-server"), ("Service", "gone"),
                                             ("HorizontalPodAutoscaler", "gone"))] == [None, None, None]


def _serve(page, model: str, variant: str, n: int, errors: int = 0) -> None:
    page.series[(model, "2" if variant == "challenger" else "1", variant, 200)] = n - errors
    if errors:
        page.series[(model, "2" if variant == "challenger" else "1", variant, 422)] = errors


ROLLOUT = {"challenger": {"alias": "challenger"}, "min_requests": 20, "max_error_rate_increase": 0.05,
           "steps": [{"kind": "canary", "weight": 0.1}, {"kind": "canary", "weight": 0.5}]}


def test_rollout_step_advances_with_an_event_a_condition_and_traffic(env):
    kube, page, store = env["kube"], env["page"], env["store"]
    _serve(page, "churn", "champion", 100)
    kube.create(md("churn", "churn", rollout=ROLLOUT))
    wait_for(lambda: status(kube, "churn").get("rollout", {}).get("phase") == "Canary", "the first step")
    assert policy(store, "churn") == {"kind": "canary", "weight": 0.1, "key": None, "challenger": "challenger"}
    assert status(kube, "churn")["rollout"]["step"] == 0
    # evidence since the step began: 30 clean challenger answers, as many champion ones
    _serve(page, "churn", "champion", 400)
    _serve(page, "churn", "challenger", 30)
    wait_for(lambda: status(kube, "churn")["rollout"]["step"] == 1, "the second step", extra=lambda: status(kube, "churn"))
    assert status(kube, "churn")["rollout"] == {"step": 1, "weight": 0.5, "phase": "Canary"}
    assert policy(store, "churn")["weight"] == 0.5
    progressing = cond(kube, "churn", "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "StepAdvanced")
    assert "30/20" not in progressing["message"] and "error rate 0.00%" in progressing["message"]
    reasons = wait_for(lambda: {e["reason"] for e in events(kube, "churn")} >= {"RolloutStarted", "StepAdvanced"}
                       and {e["reason"] for e in events(kube, "churn")}, "the events")
    assert "RolledBack" not in reasons


def test_rollout_rolls_back_on_errors(env):
    kube, page, store = env["kube"], env["page"], env["store"]
    kube.create(md("loans", "loans", rollout=ROLLOUT))
    wait_for(lambda: status(kube, "loans").get("rollout", {}).get("phase") == "Canary", "the first step")
    _serve(page, "loans", "champion", 300)
    _serve(page, "loans", "challenger", 30, errors=10)
    wait_for(lambda: status(kube, "loans")["rollout"]["phase"] == "RolledBack", "the rollback")
    rb = cond(kube, "loans", "RolledBack")
    assert (rb["status"], rb["reason"]) == ("True", "ThresholdCrossed") and "error rate 33.33%" in rb["message"]
    assert policy(store, "loans")["kind"] == "single"
    warn = wait_for(lambda: [e for e in events(kube, "loans") if e["reason"] == "RolledBack"], "the event")
    assert warn[0]["type"] == "Warning"
    assert ("loans", "challenger") not in env["promoted"]


def test_the_last_step_passing_promotes_the_challenger(env):
    kube, page, store = env["kube"], env["page"], env["store"]
    one_step = {**ROLLOUT, "challenger": {"version": "2"}, "steps": [{"kind": "canary", "weight": 0.25}]}
    kube.create(md("ads", "ads", rollout=one_step))
    wait_for(lambda: status(kube, "ads").get("rollout", {}).get("phase") == "Canary", "the step")
    assert policy(store, "ads")["challenger"] == "2"
    _serve(page, "ads", "champion", 200)
    _serve(page, "ads", "challenger", 50)
    wait_for(lambda: status(kube, "ads")["rollout"]["phase"] == "Promoted", "the promotion")
    assert status(kube, "ads")["rollout"] == {"step": 0, "weight": 1.0, "phase": "Promoted"}
    assert cond(kube, "ads", "Promoted")["status"] == "True"
    assert cond(kube, "ads", "Progressing")["status"] == "False"
    assert ("ads", "2") in env["promoted"]
    assert policy(store, "ads")["kind"] == "single"  # the champion alias now names the challenger
    wait_for(lambda: any(e["reason"] == "Promoted" for e in events(kube, "ads")), "the Promoted event")


def test_a_new_rollout_section_starts_a_new_rollout(env):
    kube, store = env["kube"], env["store"]
    wait_for(lambda: (status(kube, "loans").get("rollout") or {}).get("phase") == "RolledBack", "the rolled back CR")
    kube.patch("ModelDeployment", NS, "loans", {"spec": {"rollout": {"challenger": {"alias": "challenger-2"}}}})
    wait_for(lambda: status(kube, "loans")["rollout"]["phase"] == "Canary" and policy(store, "loans")["kind"] == "canary",
             "a new first step", extra=lambda: status(kube, "loans"))
    assert policy(store, "loans")["challenger"] == "challenger-2"
    assert status(kube, "loans")["rollout"]["step"] == 0
    assert (cond(kube, "loans", "RolledBack")["status"], cond(kube, "loans", "RolledBack")["reason"]) == \
        ("False", "NewRollout")


def test_a_step_held_past_its_timeout_says_so_once(env):
    kube = env["kube"]
    kube.create(md("slow", "slow-model", rollout=ROLLOUT))
    wait_for(lambda: (status(kube, "slow").get("rollout") or {}).get("phase") == "Canary", "the first step")
    wait_for(lambda: (cond(kube, "slow", "Progressing") or {}).get("reason") == "Waiting", "holding")
    # the step began 601 s ago (the default step_timeout_s is 600)
    kube.patch("ModelDeployment", NS, "slow", {"metadata": {"annotations": {
        "loopml.dev/step-started": str(time.time() - 601)}}})
    p = wait_for(lambda: (cond(kube, "slow", "Progressing") or {}).get("reason") == "StepTimeout"
                 and cond(kube, "slow", "Progressing"), "the timeout")
    assert p["status"] == "False" and "no decision after 600 s: waiting for evidence" in p["message"]
    wait_for(lambda: any(e["reason"] == "StepTimeout" for e in events(kube, "slow")), "the Warning")
    time.sleep(1.0)  # five more ticks, all still timed out
    assert [e["reason"] for e in events(kube, "slow")].count("StepTimeout") == 1
    assert status(kube, "slow")["rollout"]["phase"] == "Canary"
