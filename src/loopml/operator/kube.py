"""A small synchronous client for any Kubernetes resource as plain dicts.

The operator writes a handful of kinds (Deployments, Services, HPAs, Jobs, RayJobs, Events of
its own) and reads a few (Nodes, ResourceQuotas, its CRs); one generic path builder over the
official client's transport covers them all, core and grouped, without a typed model per kind.
Kopf's handlers run in threads when they are plain functions, so blocking calls are fine there.

Credentials come from an explicit kubeconfig file when given (tests and ``--kubeconfig``),
else from the pod's service account, else from the default kubeconfig.
"""

from __future__ import annotations

import threading
from typing import Any

# kind -> (apiVersion, plural): the kinds the operator touches
KINDS: dict[str, tuple[str, str]] = {
    "Deployment": ("apps/v1", "deployments"),
    "Service": ("v1", "services"),
    "HorizontalPodAutoscaler": ("autoscaling/v2", "horizontalpodautoscalers"),
    "Job": ("batch/v1", "jobs"),
    "RayJob": ("ray.io/v1", "rayjobs"),
    "Node": ("v1", "nodes"),
    "ResourceQuota": ("v1", "resourcequotas"),
    "ConfigMap": ("v1", "configmaps"),
    "ModelDeployment": ("loopml.dev/v1", "modeldeployments"),
    "TrainingJob": ("loopml.dev/v1", "trainingjobs"),
}


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def path(api_version: str, plural: str, namespace: str | None = None, name: str | None = None,
         subresource: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    parts = [base]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(plural)
    if name:
        parts.append(name)
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


class Kube:
    """``Kube(kubeconfig=None)``; the constructor does no I/O (the first call logs in)."""

    def __init__(self, kubeconfig: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self._api = None
        self._lock = threading.Lock()

    def client(self):
        with self._lock:
            if self._api is None:
                import kubernetes

                if self.kubeconfig:
                    self._api = kubernetes.config.new_client_from_config(config_file=self.kubeconfig)
                else:
                    cfg = kubernetes.client.Configuration()
                    try:
                        kubernetes.config.load_incluster_config(client_configuration=cfg)
                    except kubernetes.config.ConfigException:
                        kubernetes.config.load_kube_config(client_configuration=cfg)
                    self._api = kubernetes.client.ApiClient(cfg)
            return self._api

    def request(self, method: str, url: str, body: Any = None, content_type: str = "application/json",
                query: list[tuple[str, str]] | None = None) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.client().call_api(
                url, method, query_params=query or [], body=body,
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                response_types_map={200: "object", 201: "object", 202: "object"},
                auth_settings=["BearerToken"], _return_http_data_only=True)
        except ApiException as e:
            raise KubeError(e.status or 0, (e.body or e.reason or "").strip()[:500]) from None

    # -- verbs ------------------------------------------------------------------------------
    def get(self, kind: str, namespace: str | None, name: str) -> dict | None:
        av, plural = KINDS[kind]
        try:
            return self.request("GET", path(av, plural, namespace, name))
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[dict]:
        av, plural = KINDS[kind]
        query = [("labelSelector", label_selector)] if label_selector else None
        return list((self.request("GET", path(av, plural, namespace), query=query) or {}).get("items") or [])

    def create(self, obj: dict) -> dict:
        av, plural = KINDS[obj["kind"]]
        return self.request("POST", path(av, plural, obj["metadata"].get("namespace")), body=obj)

    def patch(self, kind: str, namespace: str | None, name: str, body: dict, subresource: str | None = None) -> dict:
        av, plural = KINDS[kind]
        return self.request("PATCH", path(av, plural, namespace, name, subresource), body=body,
                            content_type="application/merge-patch+json")

    def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        av, plural = KINDS[kind]
        try:
            self.request("DELETE", path(av, plural, namespace, name), body={"propagationPolicy": "Background"})
            return True
        except KubeError as e:
            if e.status == 404:
                return False
            raise

    def ensure(self, obj: dict) -> dict:
        """Create ``obj``, or merge-patch the existing one to it (the operator owns these
        fields; fields others set, such as the HPA's replica count, stay when ``obj`` leaves
        them out)."""
        try:
            return self.create(obj)
        except KubeError as e:
            if e.status != 409:
                raise
        meta = obj["metadata"]
        return self.patch(obj["kind"], meta.get("namespace"), meta["name"], obj)

    def serves(self, group_version: str) -> bool:
        """Whether the API server serves ``group/version`` (discovery: 200 or 404)."""
        try:
            self.request("GET", f"/apis/{group_version}")
            return True
        except KubeError as e:
            if e.status == 404:
                return False
            raise
