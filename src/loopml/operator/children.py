"""The child objects of loopml's custom resources, as plain dicts. Pure.

A ModelDeployment owns a Deployment ``<name>-server``, a Service ``<name>`` and an HPA
``<name>``; a TrainingJob owns a KubeRay ``RayJob`` ``<name>``, or an indexed ``Job``
``<name>`` with a headless Service ``<name>-workers``. Every child carries an owner reference
to its CR (controller=true), so the cluster's garbage collector deletes it with the CR.

The server pod is the one the chart renders (``loopml.deploy.manifests``: probes, security
context, secrets by reference, drain-aware grace period), so a ModelDeployment's pods and
a Helm install's pods never differ; only names, the model reference and the replica bounds
come from the CR. Training pods reuse the same container hardening and volumes.
"""

from __future__ import annotations

import copy

from loopml.deploy import manifests
from loopml.deploy.values import default_values

GROUP, VERSION = "loopml.dev", "v1"
API_VERSION = f"{GROUP}/{VERSION}"
FINALIZER = f"{GROUP}/finalizer"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
OWNER_LABEL = "loopml.dev/owner"


def owner_reference(body: dict) -> dict:
    return {"apiVersion": body.get("apiVersion", API_VERSION), "kind": body["kind"],
            "name": body["metadata"]["name"], "uid": body["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}


def _meta(body: dict, name: str, labels: dict[str, str]) -> dict:
    return {"name": name, "namespace": body["metadata"]["namespace"],
            "labels": {**labels, OWNER_LABEL: body["metadata"]["name"]},
            "ownerReferences": [owner_reference(body)]}


def model_ref(spec: dict) -> str:
    """``name@alias`` or ``name/version`` (the serve CLI's --model forms); alias champion by default."""
    m = spec["model"]
    return f"{m['name']}/{m['version']}" if m.get("version") else f"{m['name']}@{m.get('alias') or 'champion'}"


def server_values(body: dict, settings: dict | None = None) -> dict:
    """Chart values for one ModelDeployment: the operator's defaults (``settings``: image,
    the release's project ConfigMap and Secret) with this CR's names and bounds."""
    s = settings or {}
    spec = body["spec"]
    v = default_values()
    v["nameOverride"] = body["metadata"]["name"]
    v["serving"]["models"] = [model_ref(spec)]
    v["secrets"]["existingSecret"] = s.get("secret", "loopml-secrets")
    r = spec.get("replicas") or {}
    a = spec.get("autoscaling") or {}
    v["autoscaling"].update(minReplicas=int(r.get("min", 1)), maxReplicas=int(r.get("max", 3)))
    if a.get("metric", "inflight") == "inflight":
        v["autoscaling"]["inflightPerPod"] = str(a.get("target", 64))
    else:
        v["autoscaling"]["cpuUtilization"] = int(a.get("target", 80))
    return v


def _project_volume(pod: dict, config_map: str) -> None:
    for vol in pod["volumes"]:
        if vol["name"] == "project":
            vol["configMap"] = {"name": config_map}


def server_deployment(body: dict, settings: dict | None = None) -> dict:
    s = settings or {}
    d = manifests.server_deployment(server_values(body, settings))
    d["metadata"] = _meta(body, f"{body['metadata']['name']}-server", d["metadata"]["labels"])
    pod = d["spec"]["template"]["spec"]
    container = pod["containers"][0]
    image = body["spec"].get("image") or s.get("image")
    if image:  # taken whole: "host:5000/repo" has a colon and no tag
        container["image"] = image
    runtime = body["spec"].get("runtime") or "auto"
    if runtime != "auto":  # only that runtime may serve the model (serve/settings.py: LOOPML_SERVE_RUNTIME)
        container["env"] = [*container.get("env", []), {"name": "LOOPML_SERVE_RUNTIME", "value": runtime}]
    if s.get("projectConfigMap"):  # the serving section of a project's loopml.yaml, when named
        _project_volume(pod, s["projectConfigMap"])
    else:  # a ModelDeployment names its model only: no project, no ConfigMap to wait for
        container["args"] = [a for a in container["args"] if a not in ("--project", manifests.PROJECT_DIR)]
        container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "project"]
        pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "project"]
    return d


def server_service(body: dict, settings: dict | None = None) -> dict:
    svc = manifests.service(server_values(body, settings))
    svc["metadata"] = _meta(body, body["metadata"]["name"], svc["metadata"]["labels"])
    return svc


def server_hpa(body: dict, settings: dict | None = None) -> dict:
    h = manifests.hpa(server_values(body, settings))
    h["metadata"] = _meta(body, body["metadata"]["name"], h["metadata"]["labels"])
    if (body["spec"].get("autoscaling") or {}).get("metric", "inflight") == "cpu":
        h["spec"]["metrics"] = [m for m in h["spec"]["metrics"] if m["type"] == "Resource"]
    return h


def modeldeployment_children(body: dict, settings: dict | None = None) -> list[dict]:
    return [server_deployment(body, settings), server_service(body, settings), server_hpa(body, settings)]


# -- TrainingJob ---------------------------------------------------------------------------

def worker_resources(spec: dict) -> dict:
    r = spec.get("resources") or {}
    amounts = {"cpu": str(r.get("cpu", "2")), "memory": str(r.get("memory", "4Gi"))}
    if int(r.get("gpu", 0) or 0) > 0:
        amounts["nvidia.com/gpu"] = str(int(r["gpu"]))
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _training_container(body: dict, name: str, settings: dict | None) -> dict:
    spec = body["spec"]
    values = server_values({"metadata": body["metadata"], "spec": {"model": {"name": "-"}}}, settings)
    return {"name": name, "image": spec["image"], "command": ["loopml"],
            "args": ["train", "--project", manifests.PROJECT_DIR, "--json"],
            # the platform's endpoints and Secret references, as the server's; registerAs is
            # applied by the operator when the job succeeds (hooks.py), not by the pod
            "env": manifests._env(values),
            "resources": worker_resources(spec), "securityContext": manifests._container_security(),
            "volumeMounts": manifests._mounts()}


def _training_pod(body: dict, container: dict, settings: dict | None) -> dict:
    spec = body["spec"]
    values = server_values({"metadata": body["metadata"], "spec": {"model": {"name": "-"}}}, settings)
    pod = manifests._pod_spec(values, container, 60)
    project = spec["project"]
    for vol in pod["volumes"]:
        if vol["name"] == "project":  # the project's own ConfigMap, its key mounted as loopml.yaml
            vol["configMap"] = {"name": project["configMap"],
                                "items": [{"key": project.get("key", "loopml.yaml"), "path": "loopml.yaml"}]}
    return pod


def _queue_labels(body: dict, kueue: bool) -> dict[str, str]:
    q = body["spec"].get("queue")
    return {QUEUE_LABEL: q} if kueue and q else {}


def indexed_job(body: dict, kueue: bool = False, settings: dict | None = None) -> dict:
    """An indexed Job created suspended: Kueue or the operator's gang admission unsuspends it."""
    name = body["metadata"]["name"]
    workers = int(body["spec"].get("workers", 1))
    pod = _training_pod(body, _training_container(body, "trainer", settings), settings)
    pod["restartPolicy"] = "Never"
    pod["subdomain"] = f"{name}-workers"  # stable DNS per index through the headless Service
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": _meta(body, name, {"app.kubernetes.io/name": "loopml",
                                           "app.kubernetes.io/component": "training",
                                           **_queue_labels(body, kueue)}),
            "spec": {"completionMode": "Indexed", "completions": workers, "parallelism": workers,
                     "backoffLimit": 0, "suspend": True,
                     "template": {"metadata": {"labels": {"app.kubernetes.io/name": "loopml",
                                                          "app.kubernetes.io/component": "training"}},
                                  "spec": pod}}}


def workers_service(body: dict) -> dict:
    name = body["metadata"]["name"]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(body, f"{name}-workers", {"app.kubernetes.io/name": "loopml",
                                                        "app.kubernetes.io/component": "training"}),
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                     "selector": {JOB_NAME_LABEL: name}}}


def ray_job(body: dict, kueue: bool = False, settings: dict | None = None) -> dict:
    """A KubeRay RayJob: one head plus ``workers`` worker pods, shut down when the entrypoint ends."""
    name = body["metadata"]["name"]
    workers = int(body["spec"].get("workers", 1))
    head = _training_container(body, "ray-head", settings)
    worker = copy.deepcopy(head)
    worker["name"] = "ray-worker"
    for c in (head, worker):
        c.pop("command"), c.pop("args")
    entry = "loopml train --project " + manifests.PROJECT_DIR + " --json"
    return {"apiVersion": "ray.io/v1", "kind": "RayJob",
            "metadata": _meta(body, name, {"app.kubernetes.io/name": "loopml",
                                           "app.kubernetes.io/component": "training",
                                           **_queue_labels(body, kueue)}),
            "spec": {"entrypoint": entry, "suspend": True, "shutdownAfterJobFinishes": True,
                     "rayClusterSpec": {
                         "headGroupSpec": {"rayStartParams": {},
                                           "template": {"spec": _training_pod(body, head, settings)}},
                         "workerGroupSpecs": [{"groupName": "workers", "replicas": workers,
                                               "minReplicas": workers, "maxReplicas": workers,
                                               "rayStartParams": {},
                                               "template": {"spec": _training_pod(body, worker, settings)}}]}}}


def trainingjob_children(body: dict, *, kuberay: bool, kueue: bool, settings: dict | None = None) -> list[dict]:
    if kuberay:
        return [ray_job(body, kueue, settings)]
    return [indexed_job(body, kueue, settings), workers_service(body)]
