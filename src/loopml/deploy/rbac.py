"""The operator's RBAC, generated from one table of what it touches (least privilege: named
groups, resources and verbs only, no wildcard).

Two scopes. ``operator.watchNamespace`` empty: the operator watches every namespace and one
ClusterRole grants everything. Set: a Role in that namespace grants the namespaced rules and a
small ClusterRole keeps only what is cluster-scoped (nodes for gang admission, Kopf's discovery).
The chart reads the same rules from ``files/rbac-rules.yaml``, written by
``python -m loopml.deploy.rbac``; tests/deploy checks both against :data:`TABLE`.

Kopf peering is off (``settings.peering.standalone``): the operator is one replica with
strategy Recreate, so it needs no KopfPeering CRDs, no Leases and no rights on them.
"""

from __future__ import annotations

from pathlib import Path

# (apiGroup, resource, verbs, cluster-scoped?, why)
TABLE: tuple[tuple[str, str, tuple[str, ...], bool, str], ...] = (
    ("loopml.dev", "modeldeployments", ("get", "list", "watch", "patch"), False,
     "its custom resources: watched; patched for the finalizer and Kopf's progress annotations"),
    ("loopml.dev", "trainingjobs", ("get", "list", "watch", "patch"), False, "as above"),
    ("loopml.dev", "modeldeployments/status", ("get", "patch"), False, "conditions, replicas, rollout"),
    ("loopml.dev", "trainingjobs/status", ("get", "patch"), False, "phase, conditions, modelVersion"),
    ("loopml.dev", "modeldeployments/finalizers", ("update",), False,
     "children's ownerReferences with blockOwnerDeletion need it (OwnerReferencesPermissionEnforcement)"),
    ("loopml.dev", "trainingjobs/finalizers", ("update",), False, "as above"),
    ("apps", "deployments", ("get", "list", "watch", "create", "patch"), False,
     "the model server Deployment; watched for ready replicas"),
    ("", "services", ("get", "create", "patch"), False, "the model Service; the workers' headless Service"),
    ("autoscaling", "horizontalpodautoscalers", ("get", "create", "patch"), False, "the model server HPA"),
    ("batch", "jobs", ("get", "list", "watch", "create", "patch"), False,
     "indexed training Jobs: created suspended, unsuspended when admitted, suspended when preempted"),
    ("ray.io", "rayjobs", ("get", "list", "watch", "create", "patch"), False,
     "RayJobs where KubeRay runs (patch: suspend and unsuspend, as for Jobs)"),
    ("kueue.x-k8s.io", "workloads", ("get", "list", "watch"), False,
     "read only: Kueue creates and admits Workloads for the labelled children"),
    ("", "events", ("create", "patch"), False, "a Kubernetes Event per decision (Kopf's and ours)"),
    ("", "configmaps", ("get",), False, "a TrainingJob's project loopml.yaml"),
    ("", "resourcequotas", ("get", "list"), False, "namespace quotas for gang admission"),
    ("", "nodes", ("get", "list"), True, "allocatable CPU, memory and GPUs for gang admission"),
    ("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch"), True,
     "Kopf learns when the resources it handles appear"),
    ("", "namespaces", ("list", "watch"), True, "Kopf resolves the namespaces it watches"),
)
# API discovery (which groups the cluster serves: ray.io/v1? kueue.x-k8s.io/v1beta1?); path
# globs, read only, as Kubernetes' own system:discovery role grants them
DISCOVERY = ("/api", "/api/*", "/apis", "/apis/*")


def _rules(cluster: bool | None) -> list[dict]:
    """PolicyRules for the cluster-scoped rows (True), the namespaced ones (False) or all
    (None), one rule per (group, verbs) so the objects read like the table."""
    grouped: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for group, resource, verbs, scoped, _ in TABLE:
        if cluster is None or scoped == cluster:
            grouped.setdefault((group, verbs), []).append(resource)
    out = [{"apiGroups": [g], "resources": res, "verbs": list(v)} for (g, v), res in grouped.items()]
    if cluster is not False:
        out.append({"nonResourceURLs": list(DISCOVERY), "verbs": ["get"]})
    return out


def rules() -> dict[str, list[dict]]:
    """What ``files/rbac-rules.yaml`` holds: ``all`` (the ClusterRole when watching every
    namespace), ``cluster`` and ``namespaced`` (the two halves when watching one)."""
    return {"all": _rules(None), "cluster": _rules(True), "namespaced": _rules(False)}


def _meta(values: dict, name: str, namespace: str | None = None) -> dict:
    meta = {"name": name, "labels": {"app.kubernetes.io/name": "loopml",
                                     "app.kubernetes.io/instance": values["nameOverride"],
                                     "app.kubernetes.io/component": "operator"}}
    return {**meta, "namespace": namespace} if namespace else meta


def service_account_name(values: dict) -> str:
    return f"{values['nameOverride']}-operator"


def objects(values: dict) -> list[dict]:
    """ServiceAccount, roles and bindings for the operator, in the chart's order."""
    op = values["operator"]
    name = service_account_name(values)
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": op["namespace"] or "default"}]
    rbac = "rbac.authorization.k8s.io/v1"

    def binding(kind: str, role_kind: str, role: str, namespace: str | None = None) -> dict:
        return {"apiVersion": rbac, "kind": kind, "metadata": _meta(values, role, namespace),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
                "subjects": subject}

    out = [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(values, name)}]
    watch = op["watchNamespace"]
    if not watch:
        return out + [{"apiVersion": rbac, "kind": "ClusterRole", "metadata": _meta(values, name),
                       "rules": rules()["all"]},
                      binding("ClusterRoleBinding", "ClusterRole", name)]
    cluster = f"{name}-cluster"
    return out + [{"apiVersion": rbac, "kind": "ClusterRole", "metadata": _meta(values, cluster),
                   "rules": rules()["cluster"]},
                  binding("ClusterRoleBinding", "ClusterRole", cluster),
                  {"apiVersion": rbac, "kind": "Role", "metadata": _meta(values, name, watch),
                   "rules": rules()["namespaced"]},
                  binding("RoleBinding", "Role", name, watch)]


def rules_file() -> str:
    import yaml

    return ("# Generated by python -m loopml.deploy.rbac from src/loopml/deploy/rbac.py: do not edit.\n"
            + yaml.safe_dump(rules(), sort_keys=False))


if __name__ == "__main__":  # regenerate deploy/helm/loopml/files/rbac-rules.yaml
    from loopml.deploy.chart import CHART_DIR

    target = CHART_DIR / "files" / "rbac-rules.yaml"
    Path(target).parent.mkdir(exist_ok=True)
    target.write_text(rules_file())
    print(target)
