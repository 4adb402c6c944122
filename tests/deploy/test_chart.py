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
    assert len(by_python) == 10
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
