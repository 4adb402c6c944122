"""The values both the Helm chart (``deploy/helm/loopml/values.yaml``) and the Python renderer
read: defaults taken from the project's spec, overridden by a values file.

One shape for both, so ``loopml deploy k8s --values FILE`` and ``helm install -f FILE`` take the
same file. Credentials never appear here: only the name of an existing Secret and its keys.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from loopml.errors import DeployError

# the server drains gRPC and REST for this long on SIGTERM (serve/settings.py drain_timeout_s,
# uvicorn's timeout_graceful_shutdown): the pod's grace period must be longer
SERVER_DRAIN_S = 30
PRESTOP_SLEEP_S = 5  # endpoints controllers drop the pod before the server stops accepting
GRACE_MARGIN_S = 10
INFLIGHT_METRIC = "loopml_inflight_requests"  # serve/metrics.py, a per-process gauge
# a URL carrying user:password@ is a credential written inline
_INLINE_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@:]+:[^/@]+@", re.I)
INLINE_CHECKED = ("trackingUri", "s3EndpointUrl")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def default_values(spec=None, spec_text: str = "") -> dict[str, Any]:
    """The defaults; ``spec`` (a ProjectSpec) supplies the name, ports, limits and alert rules."""
    name = spec.name if spec is not None else "loopml"
    serving = spec.serving if spec is not None else None
    port = (serving.port if serving and serving.port else 8080)
    grpc = (serving.grpc_port if serving and serving.grpc_port else port + 1)
    max_inflight = serving.max_inflight if serving else 128
    rules: list[dict] = []
    if spec is not None and spec.monitoring.alerts:
        from loopml.monitor.prom_rules import prometheus_rules

        rules = prometheus_rules(list(spec.monitoring.alerts))["groups"]
    drain = SERVER_DRAIN_S
    return {
        "nameOverride": name,
        # tag "": the chart's appVersion, which is this loopml's version (tests/deploy checks)
        "image": {"repository": "ghcr.io/loopml/loopml", "tag": "", "pullPolicy": "IfNotPresent"},
        "project": {"name": name, "spec": spec_text or f"name: {name}\n"},
        "serving": {
            "models": [f"{name}@champion"],
            "port": port,
            "grpcPort": grpc,
            "drainSeconds": drain,
            "preStopSleepSeconds": PRESTOP_SLEEP_S,
        },
        "server": {
            "replicas": 2,
            "terminationGracePeriodSeconds": PRESTOP_SLEEP_S + drain + GRACE_MARGIN_S,
            "resources": {"requests": {"cpu": "500m", "memory": "512Mi"},
                          "limits": {"cpu": "2", "memory": "2Gi"}},
        },
        "autoscaling": {
            "enabled": True,
            "minReplicas": 2,
            "maxReplicas": 10,
            "metricName": INFLIGHT_METRIC,
            # half the per-model admission bound: scale out before requests meet 503s
            "inflightPerPod": str(max(1, max_inflight // 2)),
            "cpuUtilization": 80,
        },
        "podDisruptionBudget": {"minAvailable": 1},
        "controller": {
            "enabled": True,
            "terminationGracePeriodSeconds": PRESTOP_SLEEP_S + drain + GRACE_MARGIN_S,
            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"},
                          "limits": {"cpu": "2", "memory": "4Gi"}},
        },
        # the Kopf operator for the ModelDeployment and TrainingJob custom resources (#13)
        "operator": {
            "enabled": True,
            "watchNamespace": "",  # "": every namespace (a ClusterRole); a name: only it (a Role there)
            "namespace": "",  # where the chart is installed; "": Helm's release namespace ("default" here)
            "prometheusUrl": "",  # /federate of the Prometheus scraping the servers: rollouts are driven
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                          "limits": {"cpu": "1", "memory": "1Gi"}},
        },
        "platform": {"trackingUri": "", "s3EndpointUrl": "", "region": ""},
        "secrets": {
            "existingSecret": f"{name}-secrets",
            "adminTokenKey": "admin-token",
            "stateUriKey": "state-uri",  # LOOPML_STATE_URI holds the database password
            "awsAccessKeyIdKey": "aws-access-key-id",
            "awsSecretAccessKeyKey": "aws-secret-access-key",
        },
        "securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001},
        "monitoring": {
            "serviceMonitor": {"enabled": True, "interval": "30s"},
            "prometheusRule": {"enabled": True, "groups": rules},
        },
        "networkPolicy": {"enabled": True},
    }


# mappings whose keys are the user's (resource names like nvidia.com/gpu), merged like Helm does
FREE_FORM = ("server.resources", "controller.resources", "operator.resources")
# values Kubernetes takes as a quantity or a number alike
STRING_OR_NUMBER = ("autoscaling.inflightPerPod", "image.tag")


def merge(base: dict, override: dict, where: str = "") -> dict:
    """``base`` with ``override`` laid over it; a key ``base`` lacks or a mapping given a
    scalar is a DeployError naming its dotted path (a typo must not be silently ignored)."""
    out = copy.deepcopy(base)
    free = any(where == f"{p}." or where.startswith(f"{p}.") for p in FREE_FORM)
    for key, value in (override or {}).items():
        path = f"{where}{key}"
        if free and not (isinstance(out.get(key), dict) and isinstance(value, dict)):
            out[key] = copy.deepcopy(value)
            continue
        if key not in out:
            raise DeployError(f"values: {path}: unknown key; known keys here: {', '.join(sorted(out))}")
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise DeployError(f"values: {path}: expected a mapping, got {value!r}")
            out[key] = merge(out[key], value, f"{path}.")
        else:
            _check_type(path, out[key], value)
            out[key] = copy.deepcopy(value)
    return out


def _check_type(path: str, default: Any, value: Any) -> None:
    """The type values_schema() gives ``path``: what helm's schema check refuses, so do we."""
    if path in STRING_OR_NUMBER:
        ok, want = isinstance(value, (str, int, float)) and not isinstance(value, bool), "a string or a number"
    elif isinstance(default, list):
        item = str if path == "serving.models" else dict
        ok, want = isinstance(value, list) and all(isinstance(v, item) for v in value), \
            f"a list of {'strings' if item is str else 'mappings'}"
    else:
        kind = type(default)
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        want = {bool: "true or false", int: "an integer", str: "a string"}[kind]
    if not ok:
        raise DeployError(f"values: {path}: expected {want}, got {value!r}")


def values_schema(values: dict | None = None, where: str = "") -> dict:
    """The chart's ``values.schema.json``: the defaults' shape, no unknown key, so ``helm
    install -f`` refuses a typo as ``loopml deploy k8s --values`` does."""
    values = default_values() if values is None else values
    props = {}
    for key, value in values.items():
        path = f"{where}{key}"
        if path in FREE_FORM:
            props[key] = {"type": "object"}
        elif path in STRING_OR_NUMBER:
            props[key] = {"type": ["string", "number"]}
        elif isinstance(value, dict):
            props[key] = values_schema(value, f"{path}.")
        elif isinstance(value, list):
            props[key] = {"type": "array", "items": {"type": "string" if path == "serving.models" else "object"}}
        else:
            props[key] = {"type": {bool: "boolean", int: "integer", str: "string"}[type(value)]}
    schema = {"type": "object", "additionalProperties": False, "properties": props}
    return {"$schema": "http://json-schema.org/draft-07/schema#", **schema} if not where else schema


def check(values: dict) -> dict:
    """Refuse what would put a credential in a manifest, or a pod that cannot start."""
    for key in INLINE_CHECKED:
        value = str(values["platform"].get(key) or "")
        if _INLINE_PASSWORD.match(value):
            raise DeployError(f"values: platform.{key}: holds a password; put the credential in the Secret "
                              f"'{values['secrets']['existingSecret']}' and reference it instead")
    if not values["secrets"].get("existingSecret"):
        raise DeployError("values: secrets.existingSecret: required; name the Secret holding the admin token, "
                          "database URL and S3 keys (create it with kubectl create secret generic)")
    drain = values["serving"]["drainSeconds"] + values["serving"]["preStopSleepSeconds"]
    for part in ("server", "controller"):
        grace = values[part]["terminationGracePeriodSeconds"]
        if not isinstance(grace, int) or grace <= drain:
            raise DeployError(f"values: {part}.terminationGracePeriodSeconds: {grace!r} must be an integer longer "
                              f"than serving.drainSeconds + preStopSleepSeconds ({drain}), or the kubelet kills "
                              "requests mid-drain")
    for key in ("port", "grpcPort"):
        port = values["serving"][key]
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise DeployError(f"values: serving.{key}: {port!r} is not a port; use a number from 1 to 65535")
    for key in ("watchNamespace", "namespace"):
        ns = values["operator"][key]
        if ns and not (len(ns) <= 63 and _NAMESPACE.match(ns)):
            raise DeployError(f"values: operator.{key}: {ns!r} is not a namespace name; use lowercase letters, "
                              "digits and '-' (at most 63), or '' for the default")
    if values["serving"]["port"] == values["serving"]["grpcPort"]:
        raise DeployError("values: serving.grpcPort: must differ from serving.port")
    return values


def load_values_file(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise DeployError(f"{path}: no such values file; pass an existing YAML file to --values") from None
    except yaml.YAMLError as exc:
        raise DeployError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}); fix the file") from None
    if not isinstance(data, dict):
        raise DeployError(f"{path}: a values file is a YAML mapping, got {type(data).__name__}")
    return data
