"""The CRDs: the chart's crds/ files are crds.py's output, valid CustomResourceDefinitions for
Kubernetes 1.30 and 1.33, structural, and their schemas (jsonschema + the CEL rules, evaluated)
accept the sample CRs and refuse each kind of bad spec."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from loopml.deploy import crds
from tests.deploy.cel_rules import _program, failures, rules
from tests.deploy.conftest import ROOT

SAMPLES = Path(__file__).parent / "samples"
CHART_CRDS = ROOT / "deploy" / "helm" / "loopml" / "crds"


def sample(name: str) -> dict:
    return yaml.safe_load((SAMPLES / f"{name}.yaml").read_text())


FORMATS = jsonschema.FormatChecker([])


@FORMATS.checks("date-time", raises=ValueError)
def _rfc3339(value) -> bool:
    """RFC 3339 as Kubernetes takes it (a date, a time, a zone), without an extra package."""
    from datetime import datetime

    if not isinstance(value, str):
        return True
    if "T" not in value.upper() or not (value.upper().endswith("Z") or value[-6] in "+-"):
        raise ValueError(f"{value!r} is not an RFC 3339 date-time")
    datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    return True


def problems(obj: dict) -> list[str]:
    """What the API server would refuse: schema errors (unknown fields as strict field
    validation refuses them), then the CEL rules on the defaulted spec."""
    kind = obj["kind"]
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft202012Validator(crds.object_schema(kind),
                                                       format_checker=FORMATS).iter_errors(obj)]
    if errors:
        return errors
    out = failures(crds.KINDS[kind]["spec"](), obj["spec"])
    if "status" in obj:
        out += failures(crds.KINDS[kind]["status"](), obj["status"])
    return out


def test_chart_crds_folder_is_the_python_output():
    """Regenerate with `python -m loopml.deploy.crds` after changing crds.py."""
    on_disk = {p.name: p.read_text() for p in CHART_CRDS.glob("*.yaml")}
    assert on_disk == crds.files()
    assert [yaml.safe_load(on_disk[f"{c['metadata']['name']}.yaml"]) for c in crds.crds()] == crds.crds()


def test_deploy_k8s_writes_the_crds(deployed):
    _, paths = deployed
    assert {p.name: p.read_text() for p in (paths["chart"] / "crds").glob("*.yaml")} == crds.files()
    assert list(yaml.safe_load_all(paths["crds"].read_text())) == crds.crds()


@pytest.mark.parametrize("version", ["1.30.0", "1.33.0"])
def test_crds_validate_strict_with_kubernetes_validate(version):
    exe = Path(sys.executable).parent / "kubernetes-validate"
    res = subprocess.run([str(exe), "--strict", "-k", version, *map(str, sorted(CHART_CRDS.glob("*.yaml")))],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("passed") == 2, res.stdout


def _nodes(schema: dict, path: str = ""):
    yield path, schema
    for key, sub in (schema.get("properties") or {}).items():
        yield from _nodes(sub, f"{path}.{key}")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")


@pytest.mark.parametrize("kind", sorted(crds.KINDS))
def test_schema_is_structural_and_names_the_contract(kind):
    """What kubernetes-validate does not check: every node typed (or int-or-string), no
    additionalProperties (forbidden beside properties), every CEL rule compiles; names, scope,
    status subresource, printer columns pointing at fields that exist."""
    c = crds.crd(kind)
    v = c["spec"]["versions"][0]
    schema = v["schema"]["openAPIV3Schema"]
    for path, node in _nodes(schema):
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        assert "additionalProperties" not in node, path
    found = list(rules(schema))
    assert all(_program(r) for _, r, _ in found)
    assert {p for p, _, _ in found} == {"ModelDeployment": {".spec.model", ".spec.replicas", ".spec.rollout.challenger",
                                                            ".spec.rollout.steps[]"}, "TrainingJob": set()}[kind]
    assert c["metadata"]["name"] == f"{crds.KINDS[kind]['plural']}.loopml.dev"
    assert c["spec"]["scope"] == "Namespaced" and v["name"] == "v1" and v["subresources"] == {"status": {}}
    assert c["spec"]["names"]["categories"] == ["loopml"]
    assert c["spec"]["names"]["shortNames"] == {"ModelDeployment": ["mdep"], "TrainingJob": ["tj"]}[kind]
    paths = {p for p, _ in _nodes(schema)}
    for col in v["additionalPrinterColumns"]:
        jp = col["jsonPath"].split("[")[0]
        assert jp in paths or jp == ".metadata.creationTimestamp", col
    assert [col["name"] for col in v["additionalPrinterColumns"]] == {
        "ModelDeployment": ["Model", "Ready", "Replicas", "Rollout", "Age"],
        "TrainingJob": ["Phase", "Workers", "GPUs", "Queue", "Age"]}[kind]


@pytest.mark.parametrize("name", ["modeldeployment", "modeldeployment-minimal", "trainingjob",
                                  "trainingjob-minimal"])
def test_good_samples_pass(name):
    assert problems(sample(name)) == []


def test_the_examples_in_docs_kubernetes_md_pass():
    """The ModelDeployment and TrainingJob docs/kubernetes.md shows are valid custom resources."""
    import re

    text = (ROOT / "docs" / "kubernetes.md").read_text()
    docs = [d for block in re.findall(r"```yaml\n(.*?)```", text, re.S) for d in yaml.safe_load_all(block)]
    ours = [d for d in docs if d and d.get("apiVersion") == "loopml.dev/v1"]
    assert sorted(d["kind"] for d in ours) == ["ModelDeployment", "TrainingJob"]
    for d in ours:
        assert problems(d) == [], d["kind"]


def _set(obj: dict, dotted: str, value) -> dict:
    obj = copy.deepcopy(obj)
    *parents, last = dotted.split(".")
    cur = obj
    for p in parents:
        cur = cur[int(p)] if isinstance(cur, list) else cur.setdefault(p, {})
    if value is KeyError:
        del cur[last]
    else:
        cur[last] = value
    return obj


BAD = [  # (sample, field, value, words in the refusal)
    ("modeldeployment", "spec.model.name", KeyError, "'name' is a required property"),
    ("modeldeployment", "spec.runtime", "tensorflow", "is not one of"),
    ("modeldeployment", "spec.replicas", {"min": 4, "max": 2}, "replicas.max must be at least replicas.min"),
    ("modeldeployment-minimal", "spec.replicas", {"max": 0}, "less than the minimum"),
    ("modeldeployment", "spec.model.version", "3", "alias or version, not both"),
    ("modeldeployment", "spec.model.alias", KeyError, None),  # neither: fine, the default is alias champion
    ("modeldeployment-minimal", "spec.model.version", "v3", "does not match"),
    ("modeldeployment", "spec.rollout.steps.1.weight", 0, "canary step needs a weight above 0"),
    ("modeldeployment", "spec.rollout.steps.0.weight", 0.5, "shadow step takes none"),
    ("modeldeployment", "spec.rollout.steps.0.kind", "blue-green", "is not one of"),
    ("modeldeployment", "spec.rollout.max_p99_ratio", 0, "less than or equal to the minimum"),
    ("modeldeployment", "spec.traffic", {"challengerWeight": 1.5}, "greater than the maximum"),
    ("modeldeployment", "spec.autoscaling.metric", "memory", "is not one of"),
    ("modeldeployment", "spec.replicaz", 3, "Additional properties are not allowed"),
    ("modeldeployment", "spec.model.tag", "x", "Additional properties are not allowed"),
    ("trainingjob", "spec.resources.gpu", -1, "less than the minimum"),
    ("trainingjob", "spec.resources.cpu", "two", "does not match"),
    ("trainingjob", "spec.image", KeyError, "'image' is a required property"),
    ("trainingjob", "spec.project", {"key": "loopml.yaml"}, "'configMap' is a required property"),
    ("trainingjob", "spec.workers", 0, "less than the minimum"),
    ("trainingjob", "spec.queue", "Team A", "does not match"),
    ("trainingjob", "spec.gpus", 2, "Additional properties are not allowed"),
    ("trainingjob", "status", {"phase": "Sleeping"}, "is not one of"),
]


@pytest.mark.parametrize("name, field, value, words", BAD, ids=[f"{b[1]}={b[2]}" for b in BAD])
def test_each_bad_spec_is_refused(name, field, value, words):
    got = problems(_set(sample(name), field, value))
    if words is None:
        assert got == []
        return
    assert got, f"{field}={value!r} was accepted"
    assert any(words in p for p in got), got


def test_min_above_max_is_caught_only_by_the_cel_rule():
    """jsonschema alone cannot compare two fields: the refusal comes from evaluating the CRD's
    own CEL expression, and defaults count (max left out means 3)."""
    bad = _set(sample("modeldeployment"), "spec.replicas", {"min": 5})
    v = jsonschema.Draft202012Validator(crds.object_schema("ModelDeployment"))
    assert list(v.iter_errors(bad)) == []
    assert failures(crds.model_deployment_spec(), bad["spec"]) == [".replicas: replicas.max must be at least "
                                                                   "replicas.min"]
    assert failures(crds.model_deployment_spec(), _set(bad, "spec.replicas.max", 5)["spec"]) == []


def test_conditions_are_metav1_conditions():
    now = "2026-11-23T21:00:00Z"
    ok = {"type": "Ready", "status": "True", "reason": "MinimumReplicasAvailable", "message": "",
          "observedGeneration": 2, "lastTransitionTime": now}
    md = {**sample("modeldeployment"), "status": {"conditions": [ok], "readyReplicas": 2,
                                                  "rollout": {"step": 1, "weight": 0.05, "phase": "Canary"}}}
    assert problems(md) == []
    for field, value in [("status", "Maybe"), ("lastTransitionTime", "yesterday"), ("reason", ""),
                         ("lastTransitionTime", KeyError), ("observedGeneration", -1)]:
        cond = _set(ok, field, value)
        assert problems({**md, "status": {"conditions": [cond]}}), (field, value)


def test_the_operators_conditions_fit_the_schema():
    """A condition as the operator (operator/conditions.py) writes it passes the CRD's schema."""
    from loopml.operator.conditions import condition

    c = condition("Ready", True, "MinimumReplicasAvailable", "2 of 2 pods ready", 3)
    tj = {**sample("trainingjob"), "status": {"phase": "Running", "conditions": [c], "backend": "indexed-job"}}
    assert problems(tj) == []
