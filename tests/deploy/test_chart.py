"""The Helm chart: lints, renders with helm (4, from scripts/get-helm.py) into the same objects
the Python renderer writes, and its alert rules pass promtool."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from loopml.deploy.manifests import render
from tests.deploy.conftest import ROOT, helm_binary


def _helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120)


def _template(chart, values_file=None, *extra: str) -> list[dict]:
    args = ["template", "fraud", str(chart), "--kube-version", "1.30.0", *extra]
    if values_file is not None:
        args += ["-f", str(values_file)]
    res = _helm(*args)
    assert res.returncode == 0, res.stderr
    return [o for o in yaml.safe_load_all(res.stdout) if o]


@pytest.mark.parametrize("which", ["source", "written", "package"])
def test_helm_lint_passes(deployed, which):
    _, paths = deployed
    chart = {"source": ROOT / "deploy" / "helm" / "loopml", "written": paths["chart"],
             "package": paths["package"]}[which]
    res = _helm("lint", "--strict", str(chart))
    assert res.returncode == 0, res.stdout + res.stderr


def test_helm_template_equals_the_python_renderer(deployed):
    """Not only kinds and names: every field of every object agrees."""
    values, paths = deployed
    by_helm = {(o["kind"], o["metadata"]["name"]): o for o in _template(paths["chart"])}
    by_python = {(o["kind"], o["metadata"]["name"]): o for o in render(values)}
    assert sorted(by_helm) == sorted(by_python)
    # ConfigMap, server Deployment, Service, the pods' headless Service, PDB, HPA, controller,
    # operator (+ ServiceAccount, ClusterRole, ClusterRoleBinding), ServiceMonitor,
    # PrometheusRule, three NetworkPolicies
    assert len(by_python) == 16
    pods = by_python[("Service", f"{values['nameOverride']}-server-pods")]
    assert pods["spec"]["clusterIP"] == "None"  # one DNS address per pod, for the controller
    controller = by_python[("Deployment", f"{values['nameOverride']}-controller")]
    assert f"http://{values['nameOverride']}-server-pods:" in " ".join(controller["spec"]["template"]["spec"]["containers"][0]["args"])
    for key, obj in by_python.items():
        assert by_helm[key] == obj, key


def test_helm_template_agrees_with_parts_switched_off(deployed, tmp_path):
    from loopml.deploy.values import check, merge

    values, paths = deployed
    override = {"autoscaling": {"enabled": False}, "controller": {"enabled": False},
                "monitoring": {"prometheusRule": {"enabled": False}}}
    f = tmp_path / "off.yaml"
    f.write_text(yaml.safe_dump(override))
    by_helm = {(o["kind"], o["metadata"]["name"]): o for o in _template(paths["chart"], f)}
    by_python = {(o["kind"], o["metadata"]["name"]): o for o in render(check(merge(values, override)))}
    assert sorted(by_helm) == sorted(by_python)
    assert by_helm == by_python


@pytest.mark.parametrize("override", [
    {"operator": {"watchNamespace": "team-a", "namespace": "ml"}},
    {"operator": {"namespace": "ml", "prometheusUrl": "http://prometheus.monitoring:9090/federate"}},
    {"operator": {"enabled": False}},
], ids=["one-namespace", "all-namespaces", "no-operator"])
def test_helm_template_agrees_on_the_operator_and_its_rbac(deployed, tmp_path, override):
    """Installed into namespace ml: Helm's release namespace and operator.namespace agree."""
    from loopml.deploy.values import check, merge

    values, paths = deployed
    f = tmp_path / "op.yaml"
    f.write_text(yaml.safe_dump({"operator": {k: v for k, v in override["operator"].items() if k != "namespace"}}))
    by_helm = {(o["kind"], o["metadata"]["name"]): o for o in _template(paths["chart"], f, "--namespace", "ml")}
    by_python = {(o["kind"], o["metadata"]["name"]): o for o in render(check(merge(values, override)))}
    assert by_helm == by_python
    kinds = {k for k, _ in by_python}
    if not override["operator"].get("enabled", True):
        assert not kinds & {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
        assert ("Deployment", "fraud-operator") not in by_python
        return
    binding = by_python[("ClusterRoleBinding", next(n for k, n in by_python if k == "ClusterRoleBinding"))]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "fraud-operator", "namespace": "ml"}]
    args = by_python[("Deployment", "fraud-operator")]["spec"]["template"]["spec"]["containers"][0]["args"]
    if "watchNamespace" in override["operator"]:
        assert args[:3] == ["operator", "--namespace", "team-a"]
        assert by_python[("Role", "fraud-operator")]["metadata"]["namespace"] == "team-a"
    else:
        assert args[:2] == ["operator", "--all-namespaces"] and "Role" not in kinds
        assert args[-2:] == ["--prometheus-url", "http://prometheus.monitoring:9090/federate"]


def test_helm_installs_the_generated_crds(deployed):
    """Helm picks the CRDs up from crds/ (installed before the templates, never templated)."""
    from loopml.deploy.crds import crds

    _, paths = deployed
    objs = _template(paths["package"], None, "--include-crds")
    assert [o for o in objs if o["kind"] == "CustomResourceDefinition"] == crds()
    assert not [o for o in _template(paths["package"]) if o["kind"] == "CustomResourceDefinition"]


def test_chart_defaults_have_the_renderers_shape():
    """deploy/helm/loopml/values.yaml and default_values() have the same keys at every level, so
    one values file serves helm and loopml deploy k8s."""
    from loopml.deploy.values import default_values

    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict):
                out |= keys(v, f"{prefix}{k}.")
        return out

    chart = yaml.safe_load((ROOT / "deploy" / "helm" / "loopml" / "values.yaml").read_text())
    assert keys(chart) == keys(default_values())


def test_helm_refuses_a_grace_period_shorter_than_the_drain(deployed, tmp_path):
    _, paths = deployed
    f = tmp_path / "short.yaml"
    f.write_text(yaml.safe_dump({"server": {"terminationGracePeriodSeconds": 20}}))
    res = _helm("template", "fraud", str(paths["chart"]), "-f", str(f))
    assert res.returncode != 0 and "terminationGracePeriodSeconds" in res.stderr


def test_alert_rules_pass_promtool(deployed, tmp_path):
    values, _ = deployed
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed: apt-get install prometheus (Debian ships promtool in it)"
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": values["monitoring"]["prometheusRule"]["groups"]}))
    res = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 2 rules found" in res.stdout
    # and promtool does reject broken PromQL, so the check above means something
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "rate(x[5m]"}]}]}))
    assert subprocess.run([promtool, "check", "rules", str(bad)], capture_output=True).returncode != 0


def test_chart_values_schema_is_the_renderers():
    """values.schema.json is generated by loopml.deploy.values.values_schema (regenerate it
    with that function after changing the defaults)."""
    import json

    from loopml.deploy.values import values_schema

    checked_in = json.loads((ROOT / "deploy" / "helm" / "loopml" / "values.schema.json").read_text())
    assert checked_in == values_schema()


@pytest.mark.parametrize("override, accepted", [
    ({"serving": {"prot": 1}}, False),  # a typo: refused by both, never silently ignored
    ({"autoscaling": {"enabled": "yes"}}, False),
    ({"server": {"resources": {"limits": {"nvidia.com/gpu": 1}}}}, True),  # resource names are free
    ({"image": {"tag": 2}}, True),
    ({"operator": {"watchNamespace": "team-a"}}, True),
    ({"operator": {"watchNamespace": 3}}, False),
    ({"operator": {"resources": {"limits": {"memory": "2Gi"}}}}, True),
])
def test_helm_and_loopml_accept_and_refuse_the_same_values(deployed, tmp_path, override, accepted):
    from loopml.deploy.values import check, merge
    from loopml.errors import DeployError

    values, paths = deployed
    f = tmp_path / "v.yaml"
    f.write_text(yaml.safe_dump(override))
    res = _helm("template", "fraud", str(paths["chart"]), "--kube-version", "1.30.0", "-f", str(f))
    try:
        ours = render(check(merge(values, override)))
    except DeployError:
        ours = None
    if not accepted:
        assert res.returncode != 0 and ours is None, res.stdout[:300]
        return
    assert res.returncode == 0, res.stderr
    by_helm = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(res.stdout) if o}
    assert by_helm == {(o["kind"], o["metadata"]["name"]): o for o in ours}


def test_default_image_is_this_loopml_version(deployed):
    """An empty image.tag means the chart's appVersion in Helm and loopml's version in the
    renderer: the two must be the same version."""
    from loopml import __version__

    values, paths = deployed
    assert values["image"]["tag"] == ""
    chart = yaml.safe_load((ROOT / "deploy" / "helm" / "loopml" / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    images = {c["image"] for o in _template(paths["chart"]) if o["kind"] == "Deployment"
              for c in o["spec"]["template"]["spec"]["containers"]}
    assert images == {f"ghcr.io/loopml/loopml:{__version__}"}
