"""The child builders (operator/children.py): names, owner references, the serve and train commands."""

from __future__ import annotations

from loopml.operator import children

MD = {"apiVersion": "loopml.dev/v1", "kind": "ModelDeployment", "metadata": {"name": "fraud", "namespace": "ml",
                                                                              "uid": "u-1"},
      "spec": {"model": {"name": "fraud", "version": "3"}, "image": "registry.local:5000/loopml",
               "replicas": {"min": 2, "max": 6}, "autoscaling": {"metric": "cpu", "target": 70}}}
TJ = {"apiVersion": "loopml.dev/v1", "kind": "TrainingJob", "metadata": {"name": "nightly", "namespace": "ml",
                                                                         "uid": "u-2"},
      "spec": {"project": {"configMap": "fraud-project", "key": "project.yaml"}, "image": "train:1", "workers": 3,
               "resources": {"cpu": "4", "memory": "16Gi", "gpu": 1}, "queue": "team-a"}}


def test_model_references_use_the_serve_cli_forms():
    assert children.model_ref({"model": {"name": "m"}}) == "m@champion"
    assert children.model_ref({"model": {"name": "m", "alias": "blue"}}) == "m@blue"
    assert children.model_ref({"model": {"name": "m", "version": "7"}}) == "m/7"


def test_server_children_are_named_owned_and_bounded():
    dep, svc, hpa = children.modeldeployment_children(MD)
    assert [o["metadata"]["name"] for o in (dep, svc, hpa)] == ["fraud-server", "fraud", "fraud"]
    for o in (dep, svc, hpa):
        assert o["metadata"]["ownerReferences"] == [{"apiVersion": "loopml.dev/v1", "kind": "ModelDeployment",
                                                     "name": "fraud", "uid": "u-1", "controller": True,
                                                     "blockOwnerDeletion": True}]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "registry.local:5000/loopml"  # a registry port is not a tag
    assert c["args"] == ["serve", "--model", "fraud/3"]
    assert "replicas" not in dep["spec"]  # the HPA owns the count
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": 70}}}]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_training_children_per_backend():
    job, svc = children.trainingjob_children(TJ, kuberay=False, kueue=True)
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"][children.QUEUE_LABEL] == "team-a"
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == "nightly-workers" and svc["spec"]["selector"] == {children.JOB_NAME_LABEL: "nightly"}
    assert pod["containers"][0]["args"] == ["train", "--project", "/etc/loopml/project", "--json"]
    (project,) = [v for v in pod["volumes"] if v["name"] == "project"]
    assert project["configMap"] == {"name": "fraud-project", "items": [{"key": "project.yaml", "path": "loopml.yaml"}]}
    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    (ray,) = children.trainingjob_children(TJ, kuberay=True, kueue=False)
    assert ray["kind"] == "RayJob" and children.QUEUE_LABEL not in ray["metadata"]["labels"]
    assert ray["spec"]["suspend"] is True and ray["spec"]["entrypoint"].startswith("loopml train")
    assert ray["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 3


def test_the_chart_passes_its_secret_and_project_to_the_operators_server_pods():
    """The chart's operator runs with --secret (secrets.existingSecret) and --project-config-map;
    the server pods it creates reference that Secret and mount that ConfigMap (they referenced
    'loopml-secrets' whatever the release's Secret was called)."""
    from loopml.deploy.manifests import render
    from loopml.deploy.values import default_values

    values = default_values()
    values["nameOverride"], values["secrets"]["existingSecret"] = "team", "team-creds"
    op = next(o for o in render(values) if o["kind"] == "Deployment" and o["metadata"]["name"] == "team-operator")
    args = op["spec"]["template"]["spec"]["containers"][0]["args"]
    settings = {"secret": args[args.index("--secret") + 1],
                "projectConfigMap": args[args.index("--project-config-map") + 1]}
    assert settings == {"secret": "team-creds", "projectConfigMap": "team-project"}
    pod = children.server_deployment(MD, settings)["spec"]["template"]["spec"]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in pod["containers"][0]["env"] if "valueFrom" in e}
    assert refs == {"team-creds"}
    assert {"name": "team-project"} in [v.get("configMap") for v in pod["volumes"]]


def test_spec_runtime_reaches_the_server_pods_as_the_pinned_runtime():
    pinned = {**MD, "spec": {**MD["spec"], "runtime": "onnx"}}
    env = children.server_deployment(pinned)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "LOOPML_SERVE_RUNTIME", "value": "onnx"} in env
    auto = children.server_deployment(MD)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert not any(e["name"] == "LOOPML_SERVE_RUNTIME" for e in auto)  # auto: the model picks
