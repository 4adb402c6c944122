"""Plain Kubernetes manifests from the deploy values, without Helm: the same objects, names and
key fields as the templates in ``deploy/helm/loopml/templates`` (tests/deploy renders both
and compares them).

Server pods run one ``loopml serve`` process each (scaling is the HPA's job, not workers');
the controller is ``loopml up --no-server`` as one replica with strategy Recreate, because two
controllers must never run a rollout at once (loop/lock.py guards one host only); it drives the
server pods through their Service. The operator (``loopml operator``, for the CRDs in crds.py)
is one replica too, under its own ServiceAccount and the RBAC of rbac.py.
"""

from __future__ import annotations

from typing import Any

from loopml.deploy import rbac

HOME = "/var/lib/loopml"  # the workspace: an emptyDir, the root filesystem is read-only
PROJECT_DIR = "/etc/loopml/project"  # loopml.yaml from the ConfigMap
OPERATOR_HEALTH_PORT = 8080  # Kopf's liveness endpoint (loopml operator --liveness)


def _labels(values: dict, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "loopml", "app.kubernetes.io/instance": values["nameOverride"],
            "app.kubernetes.io/component": component}


def _meta(values: dict, component: str, suffix: str | None = None) -> dict:
    return {"name": f"{values['nameOverride']}-{suffix or component}", "labels": _labels(values, component)}


def _secret_env(values: dict) -> list[dict]:
    """Credentials from the existing Secret by reference: the manifests never hold a value."""
    s = values["secrets"]
    refs = (("LOOPML_ADMIN_TOKEN", "adminTokenKey"), ("LOOPML_STATE_URI", "stateUriKey"),
            ("AWS_ACCESS_KEY_ID", "awsAccessKeyIdKey"), ("AWS_SECRET_ACCESS_KEY", "awsSecretAccessKeyKey"))
    return [{"name": env, "valueFrom": {"secretKeyRef": {"name": s["existingSecret"], "key": s[key]}}}
            for env, key in sorted(refs)]  # the chart ranges over a dict: Helm sorts its keys


def _env(values: dict) -> list[dict]:
    p = values["platform"]
    plain = [("LOOPML_HOME", HOME), ("HOME", HOME), ("TMPDIR", "/tmp"),
             ("LOOPML_TRACKING_URI", p["trackingUri"]), ("AWS_ENDPOINT_URL", p["s3EndpointUrl"]),
             ("AWS_REGION", p["region"])]
    return [{"name": k, "value": str(v)} for k, v in plain if v] + _secret_env(values)


def _container_security() -> dict:
    return {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "privileged": False, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def _pod_spec(values: dict, container: dict, grace: int) -> dict:
    sc = values["securityContext"]
    return {
        "automountServiceAccountToken": False,  # neither process talks to the Kubernetes API
        "terminationGracePeriodSeconds": grace,
        "securityContext": {"runAsNonRoot": True, "runAsUser": sc["runAsUser"], "runAsGroup": sc["runAsGroup"],
                            "fsGroup": sc["fsGroup"], "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "home", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}},
                    {"name": "project", "configMap": {"name": f"{values['nameOverride']}-project"}}],
    }


def _mounts() -> list[dict]:
    return [{"name": "home", "mountPath": HOME}, {"name": "tmp", "mountPath": "/tmp"},
            {"name": "project", "mountPath": PROJECT_DIR, "readOnly": True}]


def _image(values: dict) -> str:
    from loopml import __version__

    return f"{values['image']['repository']}:{values['image']['tag'] or __version__}"


def _probe(path: str, period: int, failures: int) -> dict:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "failureThreshold": failures,
            "timeoutSeconds": 2}


def server_deployment(values: dict) -> dict:
    sv = values["serving"]
    args = ["serve", "--project", PROJECT_DIR]
    for m in sv["models"]:
        args += ["--model", m]
    container = {
        "name": "server", "image": _image(values), "imagePullPolicy": values["image"]["pullPolicy"],
        "command": ["loopml"], "args": args,
        # bind every pod interface: the Service and the kubelet's probes reach the pod IP
        "env": [{"name": "LOOPML_SERVE_HOST", "value": "0.0.0.0"},
                {"name": "LOOPML_SERVE_PORT", "value": str(sv["port"])},
                {"name": "LOOPML_SERVE_GRPC_PORT", "value": str(sv["grpcPort"])},
                {"name": "LOOPML_SERVE_WORKERS", "value": "1"}] + _env(values),
        "ports": [{"name": "http", "containerPort": sv["port"], "protocol": "TCP"},
                  {"name": "grpc", "containerPort": sv["grpcPort"], "protocol": "TCP"}],
        "startupProbe": _probe("/v2/health/live", 5, 60),  # loading a model can take minutes
        "livenessProbe": _probe("/v2/health/live", 10, 3),
        "readinessProbe": _probe("/v2/health/ready", 5, 2),
        "lifecycle": {"preStop": {"sleep": {"seconds": sv["preStopSleepSeconds"]}}},
        "resources": values["server"]["resources"],
        "securityContext": _container_security(),
        "volumeMounts": _mounts(),
    }
    sel = _labels(values, "server")
    spec = {"selector": {"matchLabels": sel},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": sel},
                         "spec": _pod_spec(values, container, values["server"]["terminationGracePeriodSeconds"])}}
    if not values["autoscaling"]["enabled"]:  # else the HPA owns the count; an upgrade must not reset it
        spec = {"replicas": values["server"]["replicas"], **spec}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(values, "server"), "spec": spec}


def controller_deployment(values: dict) -> dict:
    container = {
        "name": "controller", "image": _image(values), "imagePullPolicy": values["image"]["pullPolicy"],
        # the server pods behind the Service, not a server of its own; the admin token is
        # LOOPML_ADMIN_TOKEN from the Secret, never an argument
        "command": ["loopml"], "args": ["up", "--project", PROJECT_DIR, "--no-server", "--server-url",
                                        f"http://{values['nameOverride']}-server-pods:{values['serving']['port']}"],
        "env": _env(values), "resources": values["controller"]["resources"],
        "securityContext": _container_security(), "volumeMounts": _mounts(),
    }
    sel = _labels(values, "controller")
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(values, "controller"),
            "spec": {"replicas": 1, "selector": {"matchLabels": sel}, "strategy": {"type": "Recreate"},
                     "template": {"metadata": {"labels": sel},
                                  "spec": _pod_spec(values, container,
                                                    values["controller"]["terminationGracePeriodSeconds"])}}}


def operator_deployment(values: dict) -> dict:
    op = values["operator"]
    scope = ["--namespace", op["watchNamespace"]] if op["watchNamespace"] else ["--all-namespaces"]
    # ModelDeployments without an image run this chart's image; rollouts need Prometheus' evidence
    args = ["operator", *scope, "--image", _image(values), "--secret", values["secrets"]["existingSecret"],
            "--project-config-map", f"{values['nameOverride']}-project",
            "--liveness", f"http://0.0.0.0:{OPERATOR_HEALTH_PORT}/healthz"]
    if op["prometheusUrl"]:
        args += ["--prometheus-url", op["prometheusUrl"]]
    container = {
        "name": "operator", "image": _image(values), "imagePullPolicy": values["image"]["pullPolicy"],
        "command": ["loopml"], "args": args,
        "ports": [{"name": "health", "containerPort": OPERATOR_HEALTH_PORT, "protocol": "TCP"}],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "health"}, "periodSeconds": 20,
                          "failureThreshold": 3, "timeoutSeconds": 5},
        "env": _env(values), "resources": op["resources"],
        "securityContext": _container_security(), "volumeMounts": _mounts()[:2],
    }
    pod = _pod_spec(values, container, 30)
    # the one pod that talks to the Kubernetes API: its own ServiceAccount, token mounted
    pod = {"serviceAccountName": rbac.service_account_name(values), **pod, "automountServiceAccountToken": True,
           "volumes": pod["volumes"][:2]}
    sel = _labels(values, "operator")
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(values, "operator"),
            "spec": {"replicas": 1, "selector": {"matchLabels": sel}, "strategy": {"type": "Recreate"},
                     "template": {"metadata": {"labels": sel}, "spec": pod}}}


def service(values: dict) -> dict:
    sv = values["serving"]
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(values, "server"),
            "spec": {"type": "ClusterIP", "selector": _labels(values, "server"),
                     "ports": [{"name": "http", "port": sv["port"], "targetPort": "http", "protocol": "TCP"},
                               {"name": "grpc", "port": sv["grpcPort"], "targetPort": "grpc", "protocol": "TCP",
                                "appProtocol": "grpc"}]}}


def pods_service(values: dict) -> dict:
    """Headless: its name resolves to one address per ready server pod, so the controller
    (``up --no-server``, loop/admin_client.FleetClient) reads every pod's /metrics and changes
    every pod's traffic, not whichever pod a load-balanced Service picks. Labelled apart from the
    server Service so the ServiceMonitor does not scrape the pods twice."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(values, "server-pods"),
            "spec": {"clusterIP": "None", "selector": _labels(values, "server"),
                     "ports": [{"name": "http", "port": values["serving"]["port"], "targetPort": "http",
                                "protocol": "TCP"}]}}


def hpa(values: dict) -> dict:
    a = values["autoscaling"]
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _meta(values, "server"),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": f"{values['nameOverride']}-server"},
                     "minReplicas": a["minReplicas"], "maxReplicas": a["maxReplicas"],
                     # the HPA takes the largest proposal: in-flight requests lead, CPU is the fallback
                     "metrics": [{"type": "Pods", "pods": {"metric": {"name": a["metricName"]},
                                                           "target": {"type": "AverageValue",
                                                                      "averageValue": str(a["inflightPerPod"])}}},
                                 {"type": "Resource", "resource": {"name": "cpu", "target": {
                                     "type": "Utilization", "averageUtilization": a["cpuUtilization"]}}}]}}


def pdb(values: dict) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(values, "server"),
            "spec": {"minAvailable": values["podDisruptionBudget"]["minAvailable"],
                     "selector": {"matchLabels": _labels(values, "server")}}}


def config_map(values: dict) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(values, "config", "project"),
            "data": {"loopml.yaml": values["project"]["spec"]}}


def service_monitor(values: dict) -> dict:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": _meta(values, "server"),
            "spec": {"selector": {"matchLabels": _labels(values, "server")},
                     "endpoints": [{"port": "http", "path": "/metrics",
                                    "interval": values["monitoring"]["serviceMonitor"]["interval"]}]}}


def prometheus_rule(values: dict) -> dict:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": _meta(values, "server"),
            "spec": {"groups": values["monitoring"]["prometheusRule"]["groups"]}}


def network_policy(values: dict) -> dict:
    """Servers take traffic on their two ports only (anyone in-cluster may call them; Prometheus
    scrapes the http port); the controller takes none."""
    sv = values["serving"]
    ports = [{"protocol": "TCP", "port": sv["port"]}, {"protocol": "TCP", "port": sv["grpcPort"]}]
    server = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": _meta(values, "server"),
              "spec": {"podSelector": {"matchLabels": _labels(values, "server")}, "policyTypes": ["Ingress"],
                       "ingress": [{"ports": ports}]}}
    return server


def controller_network_policy(values: dict, component: str = "controller") -> dict:
    """The controller and the operator take no traffic at all."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": _meta(values, component),
            "spec": {"podSelector": {"matchLabels": _labels(values, component)}, "policyTypes": ["Ingress"],
                     "ingress": []}}


def render(values: dict) -> list[dict[str, Any]]:
    """Every object the chart renders for ``values`` (already merged and checked)."""
    out = [config_map(values), server_deployment(values), service(values), pods_service(values), pdb(values)]
    if values["autoscaling"]["enabled"]:
        out.append(hpa(values))
    if values["controller"]["enabled"]:
        out.append(controller_deployment(values))
    if values["operator"]["enabled"]:
        out += rbac.objects(values) + [operator_deployment(values)]
    mon = values["monitoring"]
    if mon["serviceMonitor"]["enabled"]:
        out.append(service_monitor(values))
    if mon["prometheusRule"]["enabled"] and mon["prometheusRule"]["groups"]:
        out.append(prometheus_rule(values))
    if values["networkPolicy"]["enabled"]:
        out.append(network_policy(values))
        if values["controller"]["enabled"]:
            out.append(controller_network_policy(values))
        if values["operator"]["enabled"]:
            out.append(controller_network_policy(values, "operator"))
    return out
