"""The rendered manifests: valid for Kubernetes 1.30 (kubernetes-validate --strict), secure,
probes and ports where the server listens, credentials referenced and never inlined."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from loopml.deploy.manifests import render
from tests.deploy.conftest import SENTINELS

CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}  # not in kubernetes-validate's schemas


def _objects(paths) -> list[dict]:
    return list(yaml.safe_load_all(paths["manifests"].read_text()))


def _validate(path: Path, version: str = "1.30.0") -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "kubernetes-validate"
    return subprocess.run([str(exe), "--strict", "-k", version, str(path)], capture_output=True, text=True)


def test_every_builtin_object_validates_strict_on_1_30_and_latest(deployed, tmp_path):
    _, paths = deployed
    builtin = [o for o in _objects(paths) if o["kind"] not in CRD_KINDS]
    assert {o["kind"] for o in builtin} >= {"Deployment", "Service", "HorizontalPodAutoscaler",
                                            "PodDisruptionBudget", "NetworkPolicy", "ConfigMap"}
    f = tmp_path / "builtin.yaml"
    f.write_text(yaml.safe_dump_all(builtin))
    for version in ("1.30.0", "1.33.0"):
        res = _validate(f, version)
        assert res.returncode == 0, res.stdout + res.stderr
        assert res.stdout.count("passed") == len(builtin), res.stdout


def test_strict_validation_rejects_an_unknown_field(deployed, tmp_path):
    """The validator is really strict: the same objects plus one misspelt field fail."""
    _, paths = deployed
    dep = next(o for o in _objects(paths) if o["kind"] == "Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(dep))
    assert _validate(f).returncode != 0


def _pods(objects):
    for o in objects:
        if o["kind"] == "Deployment":
            yield o, o["spec"]["template"]["spec"]


def test_no_container_runs_as_root_or_can_escalate(deployed):
    _, paths = deployed
    pods = list(_pods(_objects(paths)))
    assert len(pods) == 3
    for dep, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        # only the operator talks to the Kubernetes API, under its own ServiceAccount
        operator = dep["metadata"]["name"] == "fraud-operator"
        assert pod["automountServiceAccountToken"] is operator
        assert pod.get("serviceAccountName") == ("fraud-operator" if operator else None)
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] and sc.get("runAsUser", 1) != 0
            assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
            # a read-only root needs somewhere to write: the workspace and /tmp are emptyDirs
            mounted = {m["mountPath"] for m in c["volumeMounts"]}
            empty = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
            assert {m["mountPath"] for m in c["volumeMounts"] if m["name"] in empty} == {"/var/lib/loopml", "/tmp"}
            assert mounted >= {"/var/lib/loopml", "/tmp"}


def test_no_secret_value_in_any_rendered_file(deployed):
    _, paths = deployed
    files = [paths["manifests"], paths["values"], *Path(paths["chart"]).rglob("*")]
    for f in files:
        if f.is_file():
            text = f.read_text()
            for value in SENTINELS.values():
                assert value not in text, f"{f} holds {value}"
    for o in _objects(paths):
        for _, pod in [(None, o["spec"]["template"]["spec"])] if o["kind"] == "Deployment" else []:
            for c in pod["containers"]:
                env = {e["name"]: e for e in c["env"]}
                for name in SENTINELS:
                    assert "value" not in env[name], name
                    assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "fraud-secrets"
    assert not [o for o in _objects(paths) if o["kind"] == "Secret"]


def test_probes_ports_and_grace_follow_the_spec(deployed):
    values, paths = deployed
    objs = {(o["kind"], o["metadata"]["name"]): o for o in _objects(paths)}
    server = objs[("Deployment", "fraud-server")]["spec"]["template"]["spec"]
    c = server["containers"][0]
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 9000, "grpc": 9001}  # loopml.yaml
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["LOOPML_SERVE_PORT"] == "9000" and env["LOOPML_SERVE_GRPC_PORT"] == "9001"
    assert env["LOOPML_SERVE_HOST"] == "0.0.0.0" and env["LOOPML_SERVE_WORKERS"] == "1"
    assert c["args"][:1] == ["serve"] and c["args"][-2:] == ["--model", "fraud@champion"]
    assert server["terminationGracePeriodSeconds"] > 30 + c["lifecycle"]["preStop"]["sleep"]["seconds"]
    svc = objs[("Service", "fraud-server")]["spec"]
    assert {p["name"]: p["port"] for p in svc["ports"]} == {"http": 9000, "grpc": 9001}
    hpa = objs[("HorizontalPodAutoscaler", "fraud-server")]["spec"]
    pods_metric = hpa["metrics"][0]["pods"]
    assert pods_metric["metric"]["name"] == "loopml_inflight_requests"
    assert pods_metric["target"] == {"type": "AverageValue", "averageValue": "20"}  # max_inflight 40 / 2
    assert hpa["metrics"][1]["resource"]["name"] == "cpu"
    ctl = objs[("Deployment", "fraud-controller")]["spec"]
    assert ctl["replicas"] == 1 and ctl["strategy"] == {"type": "Recreate"}
    # the controller drives the server pods through their Service, and starts no server itself
    args = ctl["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--server-url") + 1] == "http://fraud-server-pods:9000" and "--no-server" in args
    op = objs[("Deployment", "fraud-operator")]["spec"]
    assert op["replicas"] == 1 and op["strategy"] == {"type": "Recreate"}
    assert "replicas" not in objs[("Deployment", "fraud-server")]["spec"]  # the HPA owns it


def test_crd_objects_match_the_prometheus_operator_shape(deployed):
    """ServiceMonitor and PrometheusRule are CRDs kubernetes-validate has no schema for: checked
    against tests/deploy/monitoring_crds.json, a subset of the prometheus-operator CRDs."""
    import json

    import jsonschema

    schemas = json.loads((Path(__file__).parent / "monitoring_crds.json").read_text())
    _, paths = deployed
    crds = [o for o in _objects(paths) if o["kind"] in CRD_KINDS]
    assert sorted(o["kind"] for o in crds) == ["PrometheusRule", "ServiceMonitor"]
    for o in crds:
        jsonschema.validate(o, schemas[o["kind"]])
    rule = next(o for o in crds if o["kind"] == "PrometheusRule")
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert alerts["FraudDrift"]["expr"] == "loopml_drift_share >= 0.3" and alerts["FraudDrift"]["for"] == "10m"
    bad = dict(rule, spec={"groups": [{"name": "g", "rules": [{"alert": "A"}]}]})  # no expr
    try:
        jsonschema.validate(bad, schemas["PrometheusRule"])
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("a rule without expr passed the schema")


def test_disabled_parts_are_not_rendered(deployed):
    from loopml.deploy.values import check, merge

    values, _ = deployed
    off = check(merge(values, {"autoscaling": {"enabled": False}, "controller": {"enabled": False},
                               "networkPolicy": {"enabled": False},
                               "monitoring": {"serviceMonitor": {"enabled": False}}}))
    kinds = [(o["kind"], o["metadata"]["name"]) for o in render(off)]
    assert ("HorizontalPodAutoscaler", "fraud-server") not in kinds
    assert not [k for k in kinds if k[0] in ("NetworkPolicy", "ServiceMonitor") or k[1] == "fraud-controller"]
    server = next(o for o in render(off) if o["kind"] == "Deployment")
    assert server["spec"]["replicas"] == 2


def test_pods_call_loopml_as_its_cli_and_settings_define_it(deployed):
    """The container command lines use options the real commands have, the LOOPML_SERVE_*
    variables are ones serve/settings.py reads, and the probe paths are routes the server
    answers: a rename there breaks this test, not a cluster."""
    import typer

    from loopml.cli.main import _mount, app
    from loopml.serve.app import _SIMPLE_ROUTES
    from loopml.serve.settings import SERVING_ENV

    _mount()
    cli = typer.main.get_command(app)
    _, paths = deployed
    for _, pod in _pods(_objects(paths)):
        c = pod["containers"][0]
        assert c["command"] == ["loopml"]
        sub = cli.commands[c["args"][0]]
        known = {opt for p in sub.params for opt in p.opts}
        assert {a for a in c["args"][1:] if a.startswith("--")} <= known, (c["args"], known)
        serve_env = {e["name"] for e in c["env"] if e["name"].startswith("LOOPML_SERVE_")}
        assert serve_env <= set(SERVING_ENV.values())
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe in c and c["name"] == "operator":  # Kopf's own liveness endpoint, on the port named
                url = c["args"][c["args"].index("--liveness") + 1]
                port = {p["name"]: p["containerPort"] for p in c["ports"]}[c[probe]["httpGet"]["port"]]
                assert url == f"http://0.0.0.0:{port}{c[probe]['httpGet']['path']}"
            elif probe in c:
                assert c[probe]["httpGet"]["path"] in _SIMPLE_ROUTES
    objs = {o["kind"]: o for o in _objects(paths)}
    assert objs["ServiceMonitor"]["spec"]["endpoints"][0]["path"] in _SIMPLE_ROUTES
    # the HPA's Pods metric is a gauge the server exports under that exact name
    import loopml.serve.metrics as metrics

    name = objs["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert f'GaugeMetricFamily("{name}"' in Path(metrics.__file__).read_text()
