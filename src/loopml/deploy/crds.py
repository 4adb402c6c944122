"""loopml's CustomResourceDefinitions (``loopml.dev/v1`` ModelDeployment and TrainingJob),
built here and written as plain YAML into the chart's ``crds/`` folder (Helm installs that
folder before the templates and never templates it). Regenerate those files with
``python -m loopml.deploy.crds``; tests/deploy checks they equal :func:`crds`.

The schemas are structural (Kubernetes prunes unknown fields and ``kubectl`` refuses them with
its default strict field validation); Kubernetes forbids ``additionalProperties: false`` in a
CRD, so :func:`spec_schema` adds it for plain jsonschema validation of sample CRs. Cross-field
rules are CEL ``x-kubernetes-validations`` the API server evaluates (tests evaluate the same
expressions with cel-python).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

GROUP = "loopml.dev"
VERSION = "v1"
RUNTIMES = ("auto", "sklearn", "onnx", "pyfunc", "torch", "xgboost", "lightgbm", "text-embedding")
MD_CONDITIONS = ("Ready", "Progressing", "RolledBack", "Promoted")
TJ_CONDITIONS = ("Admitted", "Running", "Succeeded", "Failed", "Preempted")
TJ_PHASES = ("Pending", "Queued", "Admitted", "Running", "Succeeded", "Failed", "Preempted")
ROLLOUT_PHASES = ("Idle", "Shadow", "Canary", "Promoted", "RolledBack")
# the Kubernetes resource.Quantity grammar, as the built-in schemas spell it
QUANTITY = (r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?"
            r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ALIAS = r"^[A-Za-z0-9_-]+$"  # an MLflow model alias (letters, digits, _ and -)


def _str(desc: str, **kw: Any) -> dict:
    return {"type": "string", "description": desc, **kw}


def _int(desc: str, **kw: Any) -> dict:
    return {"type": "integer", "description": desc, **kw}


def _num(desc: str, **kw: Any) -> dict:
    return {"type": "number", "description": desc, **kw}


def _obj(desc: str, props: dict, required: list[str] | None = None, rules: list[tuple[str, str]] = (),
         **kw: Any) -> dict:
    out = {"type": "object", "description": desc, "properties": props, **kw}
    if required:
        out["required"] = required
    if rules:
        out["x-kubernetes-validations"] = [{"rule": r, "message": m} for r, m in rules]
    return out


def _quantity(desc: str, default: str) -> dict:
    return {"anyOf": [{"type": "integer"}, {"type": "string"}], "pattern": QUANTITY,
            "x-kubernetes-int-or-string": True, "description": desc, "default": default}


ALIAS_XOR_VERSION = ("!(has(self.alias) && has(self.version))", "set alias or version, not both")


def _model_ref(desc: str, name: bool) -> dict:
    props = {"alias": _str("a registered model alias, e.g. champion", minLength=1, maxLength=255, pattern=ALIAS),
             "version": _str("a registered model version number", pattern=r"^[0-9]+$", maxLength=20)}
    if name:
        props = {"name": _str("the registered model name", minLength=1, maxLength=256), **props}
    return _obj(desc, props, ["name"] if name else None, [ALIAS_XOR_VERSION])


def condition_schema() -> dict:
    """metav1.Condition, as Kubernetes' own types spell it."""
    return _obj("a metav1.Condition", {
        "type": _str("condition type", minLength=1, maxLength=316,
                     pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                             r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"),
        "status": _str("True, False or Unknown", enum=["True", "False", "Unknown"]),
        "reason": _str("CamelCase reason", minLength=1, maxLength=1024,
                       pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"),
        "message": _str("human-readable detail", maxLength=32768),
        "observedGeneration": _int("the .metadata.generation the condition was computed from", format="int64",
                                   minimum=0),
        "lastTransitionTime": _str("when status last changed", format="date-time"),
    }, ["type", "status", "lastTransitionTime", "reason", "message"])


def _conditions(types: tuple[str, ...]) -> dict:
    return {"type": "array", "description": f"condition types: {', '.join(types)}", "items": condition_schema(),
            "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}


def _rollout() -> dict:
    """The project spec's rollout (spec.RolloutSpec), same snake_case field names."""
    step = _obj("one rollout step", {
        "kind": _str("shadow (off the record) or canary (a share of traffic)", enum=["shadow", "canary"]),
        "weight": _num("the challenger's share of traffic (canary only)", minimum=0, maximum=1),
        "min_requests": _int("challenger answers needed before deciding", minimum=1),
    }, ["kind"], [("self.kind == 'shadow' ? (!has(self.weight) || self.weight == 0.0) "
                   ": (has(self.weight) && self.weight > 0.0)",
                   "a canary step needs a weight above 0; a shadow step takes none")])
    return _obj("the progressive rollout of a challenger (loopml.yaml's rollout)", {
        "challenger": _model_ref("the version to roll out (default: alias challenger)", name=False),
        "steps": {"type": "array", "items": step, "minItems": 1, "maxItems": 20},
        "min_requests": _int("default challenger answers per step", minimum=1),
        "max_error_rate_increase": _num("roll back above this error-rate increase", minimum=0, maximum=1),
        "max_p99_ratio": _num("roll back above this challenger/champion p99 ratio", minimum=0,
                              exclusiveMinimum=True),
        "p99_slack_ms": _num("p99 differences below this never roll back", minimum=0),
        "max_prediction_divergence": _num("roll back above this shadow disagreement", minimum=0, maximum=1),
        "min_shadow_agreement": _num("roll back below this shadow agreement", minimum=0, maximum=1),
    })


def model_deployment_spec() -> dict:
    return _obj("a served model: its server Deployment, Service and HPA, and its rollouts", {
        "model": _model_ref("the registered model (default: alias champion)", name=True),
        "runtime": _str("the model's runtime", enum=list(RUNTIMES), default="auto"),
        "image": _str("the server image (default: the operator's)", minLength=1),
        "replicas": _obj("server pods", {"min": _int("fewest pods", minimum=1, default=1),
                                         "max": _int("most pods", minimum=1, default=3)}, None,
                         [("!has(self.min) || !has(self.max) || self.max >= self.min",
                           "replicas.max must be at least replicas.min")]),
        "autoscaling": _obj("the HPA's target", {
            "metric": _str("inflight (requests per pod) or cpu (percent)", enum=["inflight", "cpu"],
                           default="inflight"),
            "target": _int("requests in flight per pod, or CPU percent", minimum=1, default=64)}),
        "rollout": _rollout(),
        "traffic": _obj("manual split while no rollout runs", {
            "challengerWeight": _num("the challenger's share", minimum=0, maximum=1, default=0.0)}),
    }, ["model"])


def model_deployment_status() -> dict:
    return _obj("observed state", {
        "observedGeneration": _int("the generation last reconciled", format="int64", minimum=0),
        "conditions": _conditions(MD_CONDITIONS),
        "replicas": _int("server pods", minimum=0),
        "readyReplicas": _int("ready server pods", minimum=0),
        "rollout": _obj("the rollout in progress", {
            "step": _int("index of the current step", minimum=0),
            "weight": _num("the challenger's current share", minimum=0, maximum=1),
            "phase": _str("rollout phase", enum=list(ROLLOUT_PHASES))}),
        "url": _str("the in-cluster URL of the Service"),
    })


def training_job_spec() -> dict:
    return _obj("a training run of a loopml project on the cluster", {
        "project": _obj("the ConfigMap holding the project's loopml.yaml", {
            "configMap": _str("ConfigMap name", minLength=1, maxLength=253, pattern=DNS_SUBDOMAIN),
            "key": _str("key of loopml.yaml in it", minLength=1, maxLength=253, default="loopml.yaml")},
            ["configMap"]),
        "image": _str("the training image", minLength=1),
        "workers": _int("pods that train together (all or none are admitted)", minimum=1, maximum=1024, default=1),
        "resources": _obj("per worker", {
            "cpu": _quantity("CPU per worker", "2"),
            "memory": _quantity("memory per worker", "4Gi"),
            "gpu": _int("nvidia.com/gpu per worker", minimum=0, maximum=64, default=0)}),
        "priority": _int("higher runs first and may preempt lower", minimum=-1_000_000, maximum=1_000_000,
                         default=0),
        "queue": _str("Kueue LocalQueue (label kueue.x-k8s.io/queue-name)", minLength=1, maxLength=253,
                      pattern=DNS_SUBDOMAIN),
        "registerAs": _str("alias the trained version gets", minLength=1, maxLength=255, pattern=ALIAS,
                           default="challenger"),
    }, ["project", "image"])


def training_job_status() -> dict:
    return _obj("observed state", {
        "observedGeneration": _int("the generation last reconciled", format="int64", minimum=0),
        "phase": _str("where the job is", enum=list(TJ_PHASES)),
        "conditions": _conditions(TJ_CONDITIONS),
        "backend": _str("what runs the workers", enum=["rayjob", "indexed-job"]),
        "admittedAt": _str("when the job was admitted", format="date-time"),
        "modelVersion": _str("the registered version the job produced"),
    })


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
KINDS: dict[str, dict] = {
    "ModelDeployment": {"plural": "modeldeployments", "short": ["mdep"], "spec": model_deployment_spec,
                        "status": model_deployment_status, "columns": [
                            {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
                            {"name": "Ready", "type": "string",
                             "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
                            {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas"},
                            {"name": "Rollout", "type": "string", "jsonPath": ".status.rollout.phase"}, _AGE]},
    "TrainingJob": {"plural": "trainingjobs", "short": ["tj"], "spec": training_job_spec,
                    "status": training_job_status, "columns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Workers", "type": "integer", "jsonPath": ".spec.workers"},
                        {"name": "GPUs", "type": "integer", "jsonPath": ".spec.resources.gpu"},
                        {"name": "Queue", "type": "string", "jsonPath": ".spec.queue"}, _AGE]},
}


def crd(kind: str) -> dict:
    k = KINDS[kind]
    schema = {"type": "object", "required": ["spec"],
              "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                             "metadata": {"type": "object"}, "spec": k["spec"](), "status": k["status"]()}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{k['plural']}.{GROUP}", "labels": {"app.kubernetes.io/name": "loopml"}},
        "spec": {"group": GROUP, "scope": "Namespaced",
                 "names": {"kind": kind, "listKind": f"{kind}List", "plural": k["plural"],
                           "singular": kind.lower(), "shortNames": k["short"], "categories": ["loopml"]},
                 "versions": [{"name": VERSION, "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": schema},
                               "subresources": {"status": {}}, "additionalPrinterColumns": k["columns"]}]},
    }


def crds() -> list[dict]:
    return [crd("ModelDeployment"), crd("TrainingJob")]


def _strict(schema: dict) -> dict:
    """Refuse unknown fields, as kubectl's strict field validation does (a CRD may not say so)."""
    out = copy.deepcopy(schema)
    if out.get("exclusiveMinimum") is True:  # OpenAPI 3.0's boolean form, jsonschema's number form
        out["exclusiveMinimum"] = out.pop("minimum")
    if out.get("type") == "object" and "properties" in out:
        out["additionalProperties"] = False
        out["properties"] = {k: _strict(v) for k, v in out["properties"].items()}
    if "items" in out:
        out["items"] = _strict(out["items"])
    return out


def spec_schema(kind: str) -> dict:
    """The CR's ``spec`` as a jsonschema document (draft 2020-12), unknown fields refused."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **_strict(KINDS[kind]["spec"]())}


def object_schema(kind: str) -> dict:
    """A whole custom resource (apiVersion, kind, metadata, spec, status) for jsonschema."""
    k = KINDS[kind]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
            "properties": {"apiVersion": {"const": f"{GROUP}/{VERSION}"}, "kind": {"const": kind},
                           "metadata": {"type": "object", "required": ["name"]},
                           "spec": _strict(k["spec"]()), "status": _strict(k["status"]())}}


def files() -> dict[str, str]:
    """``crds/`` file name -> YAML text, as the chart holds them."""
    import yaml

    head = "# Generated by python -m loopml.deploy.crds from src/loopml/deploy/crds.py: do not edit.\n"
    return {f"{c['metadata']['name']}.yaml": head + yaml.safe_dump(c, sort_keys=False) for c in crds()}


def write(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, text in files().items():
        (folder / name).write_text(text)
        out.append(folder / name)
    return out


if __name__ == "__main__":  # regenerate deploy/helm/loopml/crds/
    from loopml.deploy.chart import CHART_DIR

    for p in write(CHART_DIR / "crds"):
        print(p)
