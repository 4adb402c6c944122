"""The operator's RBAC: generated from rbac.TABLE, no wildcard, nothing it does not touch, all it
does touch, valid for Kubernetes 1.30 and 1.33, and the chart's rules file is the generated one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from loopml.deploy import rbac
from loopml.deploy.values import check, default_values, merge
from tests.deploy.conftest import ROOT

MODES = {"all-namespaces": {}, "one-namespace": {"operator": {"watchNamespace": "team-a", "namespace": "ml"}}}


def _objects(mode: str) -> list[dict]:
    return rbac.objects(check(merge(default_values(), MODES[mode])))


def _roles(objs):
    return [o for o in objs if o["kind"] in ("ClusterRole", "Role")]


def _grants(objs) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs, over every role given."""
    out: dict[tuple[str, str], set[str]] = {}
    for role in _roles(objs):
        for r in role["rules"]:
            for g in r.get("apiGroups", []):
                for res in r.get("resources", []):
                    out.setdefault((g, res), set()).update(r["verbs"])
    return out


def test_chart_rules_file_is_the_generated_one():
    """Regenerate with `python -m loopml.deploy.rbac` after changing the table."""
    path = ROOT / "deploy" / "helm" / "loopml" / "files" / "rbac-rules.yaml"
    assert path.read_text() == rbac.rules_file()
    assert yaml.safe_load(path.read_text()) == rbac.rules()


@pytest.mark.parametrize("mode", sorted(MODES))
def test_no_wildcard_and_nothing_dangerous(mode):
    for role in _roles(_objects(mode)):
        for r in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert "*" not in r.get(field, []), (role["metadata"]["name"], r)
            # no delete (owner references collect the children), no escalate/bind/impersonate;
            # update only on */finalizers, which blockOwnerDeletion needs
            finalizers = all(res.endswith("/finalizers") for res in r.get("resources", ["-"]))
            assert set(r["verbs"]) <= ({"update"} if finalizers else {"get", "list", "watch", "create", "patch"}), r
            if "nonResourceURLs" in r:
                assert r["verbs"] == ["get"] and "apiGroups" not in r
    grants = _grants(_objects(mode))
    # never secrets (credentials reach pods by secretKeyRef, the operator reads none), never pods/exec
    assert not {res for _, res in grants} & {"secrets", "pods", "pods/exec", "roles", "rolebindings",
                                              "clusterroles", "clusterrolebindings", "serviceaccounts"}
    assert grants[("kueue.x-k8s.io", "workloads")] == {"get", "list", "watch"}  # read only


@pytest.mark.parametrize("mode", sorted(MODES))
def test_everything_the_operator_touches_is_granted(mode):
    """Every kind in the operator's client (operator/kube.py), the kinds its Kopf handlers watch
    (list + watch), its status writes and Kopf's own needs are in the roles of either mode."""
    from loopml.operator.kube import KINDS

    grants = _grants(_objects(mode))
    for kind, (api_version, plural) in KINDS.items():
        group = api_version.split("/")[0] if "/" in api_version else ""
        assert "get" in grants.get((group, plural), set()), kind
    for group, plural in [("loopml.dev", "modeldeployments"), ("loopml.dev", "trainingjobs"), ("apps", "deployments"),
                          ("batch", "jobs"), ("ray.io", "rayjobs"), ("apiextensions.k8s.io", "customresourcedefinitions")]:
        assert {"list", "watch"} <= grants[(group, plural)], plural
    for plural in ("modeldeployments", "trainingjobs"):
        assert {"get", "patch"} <= grants[("loopml.dev", f"{plural}/status")]
        assert {"patch"} <= grants[("loopml.dev", plural)]  # finalizer and Kopf's annotations
    for group, plural in [("apps", "deployments"), ("", "services"), ("autoscaling", "horizontalpodautoscalers"),
                          ("batch", "jobs"), ("ray.io", "rayjobs")]:
        assert {"create", "patch"} <= grants[(group, plural)], plural
    assert {"create", "patch"} <= grants[("", "events")]
    urls = {u for role in _roles(_objects(mode)) for r in role["rules"] for u in r.get("nonResourceURLs", [])}
    assert urls == {"/api", "/api/*", "/apis", "/apis/*"}  # discovery: does the cluster serve ray.io/v1?


def test_one_namespace_mode_keeps_only_cluster_scoped_rights_cluster_wide():
    objs = _objects("one-namespace")
    by_kind = {o["kind"]: o for o in objs}
    assert set(by_kind) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    cluster = _grants([by_kind["ClusterRole"]])
    assert {res for _, res in cluster} == {"nodes", "customresourcedefinitions", "namespaces"}
    assert all(verbs <= {"get", "list", "watch"} for verbs in cluster.values())
    assert by_kind["Role"]["metadata"]["namespace"] == "team-a"
    assert by_kind["RoleBinding"]["metadata"]["namespace"] == "team-a"
    assert by_kind["RoleBinding"]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                                 "name": "loopml-operator"}
    for b in ("ClusterRoleBinding", "RoleBinding"):
        assert by_kind[b]["subjects"] == [{"kind": "ServiceAccount", "name": "loopml-operator", "namespace": "ml"}]
    namespaced = _grants([by_kind["Role"]])
    assert not {res for _, res in namespaced} & {"nodes", "customresourcedefinitions", "namespaces"}
    assert "nonResourceURLs" not in str(by_kind["Role"]["rules"])
    # the two halves together grant what the one ClusterRole grants in all-namespaces mode
    assert _grants(objs) == _grants(_objects("all-namespaces"))


@pytest.mark.parametrize("version", ["1.30.0", "1.33.0"])
def test_rbac_validates_strict_with_kubernetes_validate(tmp_path, version):
    objs = _objects("all-namespaces") + _objects("one-namespace")
    f = tmp_path / "rbac.yaml"
    f.write_text(yaml.safe_dump_all(objs))
    exe = Path(sys.executable).parent / "kubernetes-validate"
    res = subprocess.run([str(exe), "--strict", "-k", version, str(f)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("passed") == len(objs), res.stdout


def test_a_bad_namespace_value_is_refused():
    from loopml.errors import DeployError

    for key in ("watchNamespace", "namespace"):
        with pytest.raises(DeployError, match=f"operator.{key}"):
            check(merge(default_values(), {"operator": {key: "Team_A"}}))
