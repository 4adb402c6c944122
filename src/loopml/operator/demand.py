"""What gang admission reads from the cluster, as ``scheduling`` types. Pure.

A TrainingJob's per-worker demand (CPU and memory as Kubernetes quantities, GPUs as
``nvidia.com/gpu``), a node's allocatable resources (cordoned nodes left out), the tightest
ResourceQuota hard limit per namespace, and the phase a Job's or RayJob's status reports.
"""

from __future__ import annotations

import datetime
from typing import Any

from loopml.operator import scheduling


def _quantity(value: Any) -> float:
    from kubernetes.utils import parse_quantity

    return float(parse_quantity(str(value)))


def demand(body: dict) -> scheduling.Job:
    spec, meta = body["spec"], body["metadata"]
    r = spec.get("resources") or {}
    created = meta.get("creationTimestamp")
    submitted = (datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp() if created else 0.0)
    return scheduling.Job(name=f"{meta['namespace']}/{meta['name']}", namespace=meta["namespace"],
                          workers=int(spec.get("workers", 1)), cpu=_quantity(r.get("cpu", "2")),
                          memory=_quantity(r.get("memory", "4Gi")), gpu=int(r.get("gpu", 0) or 0),
                          priority=int(spec.get("priority", 0)), submitted=submitted)


def node_capacity(node: dict) -> scheduling.Node | None:
    if (node.get("spec") or {}).get("unschedulable"):
        return None
    a = (node.get("status") or {}).get("allocatable") or {}
    return scheduling.Node(name=node["metadata"]["name"], cpu=_quantity(a.get("cpu", 0)),
                           memory=_quantity(a.get("memory", 0)), gpu=int(_quantity(a.get("nvidia.com/gpu", 0))))


def namespace_quotas(quotas: list[dict]) -> dict[str, dict[str, float]]:
    """The tightest hard limit per namespace and kind over its ResourceQuota objects."""
    keys = {"cpu": ("requests.cpu", "cpu"), "memory": ("requests.memory", "memory"),
            "gpu": ("requests.nvidia.com/gpu",)}
    out: dict[str, dict[str, float]] = {}
    for q in quotas:
        hard = (q.get("spec") or {}).get("hard") or {}
        ns = out.setdefault(q["metadata"]["namespace"], {})
        for kind, names in keys.items():
            for n in names:
                if n in hard:
                    ns[kind] = min(ns.get(kind, float("inf")), _quantity(hard[n]))
    return {ns: q for ns, q in out.items() if q}


def child_phase(child: dict) -> str | None:
    """Running, Succeeded or Failed from a Job's or RayJob's status; None when neither says."""
    st = child.get("status") or {}
    if child.get("kind") == "RayJob":
        return {"SUCCEEDED": "Succeeded", "FAILED": "Failed", "STOPPED": "Failed",
                "RUNNING": "Running"}.get(str(st.get("jobStatus", "")).upper())
    for c in st.get("conditions") or ():
        if c.get("status") == "True" and c.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "Succeeded"
        if c.get("status") == "True" and c.get("type") == "Failed":
            return "Failed"
    if not (child.get("spec") or {}).get("suspend") and int(st.get("active") or 0) > 0:
        return "Running"
    return None
