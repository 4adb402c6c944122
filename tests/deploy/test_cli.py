"""``loopml deploy k8s`` as a user runs it: exit codes and one-line errors. The happy path and
one refusal run as real processes; the other bad inputs go through the same ``main()`` in-process
(a loopml process takes seconds to import on a loaded machine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

LOOPML = str(Path(sys.executable).parent / "loopml")


def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([LOOPML, "deploy", "k8s", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def _main(capsys, monkeypatch, *args: str) -> subprocess.CompletedProcess:
    from loopml.cli.main import main

    monkeypatch.setattr(sys, "argv", ["loopml", "deploy", "k8s", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def test_a_refusal_in_a_real_process(project, tmp_path):
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({"serving": {"prot": 1}}))
    res = _run("-p", str(project), "--out", str(tmp_path / "out"), "--values", str(values))
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, res.stderr
    assert "serving.prot: unknown key" in res.stderr


def test_writes_manifests_values_chart_and_package(project, tmp_path):
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({"serving": {"port": 7000}, "platform": {"trackingUri": "http://mlflow:5000"}}))
    res = _run("-p", str(project), "--out", str(tmp_path / "out"), "--values", str(values))
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out"
    from loopml.deploy.chart import chart_version

    assert {p.name for p in out.iterdir()} == {"crds.yaml", "manifests.yaml", "values.yaml", "chart",
                                              f"loopml-{chart_version()}.tgz"}
    objs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all((out / "manifests.yaml").read_text())}
    assert objs[("Service", "fraud-server")]["spec"]["ports"][0]["port"] == 7000
    env = objs[("Deployment", "fraud-controller")]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "LOOPML_TRACKING_URI", "value": "http://mlflow:5000"} in env
    assert "Deployment/fraud-controller" in res.stdout and "fraud-secrets" in res.stdout
    # the spec the pods read is the project's own loopml.yaml
    assert objs[("ConfigMap", "fraud-project")]["data"]["loopml.yaml"] == (project / "loopml.yaml").read_text()


@pytest.mark.parametrize("override, words", [
    ({"serving": {"prot": 1}}, ["serving.prot", "unknown key", "port"]),
    ({"platform": {"trackingUri": "http://admin:hunter2@mlflow:5000"}}, ["platform.trackingUri", "Secret"]),
    ({"server": {"terminationGracePeriodSeconds": 10}}, ["server.terminationGracePeriodSeconds", "longer"]),
    ({"serving": {"grpcPort": 70000}}, ["serving.grpcPort", "65535"]),
    ({"secrets": {"existingSecret": ""}}, ["secrets.existingSecret", "kubectl create secret"]),
    ({"image": "x"}, ["image", "expected a mapping"]),
])
def test_bad_values_exit_2_with_one_line(project, tmp_path, capsys, monkeypatch, override, words):
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump(override))
    res = _main(capsys, monkeypatch, "-p", str(project), "--out", str(tmp_path / "out"), "--values", str(values))
    assert res.returncode == 2, res.stdout + res.stderr
    line = res.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, line
    for w in words:
        assert w in line, line
    assert "hunter2" not in line  # the refusal does not echo the password either
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [None, "a: [1", "- just\n- a list\n"])
def test_unreadable_values_file_exits_2(project, tmp_path, capsys, monkeypatch, content):
    values = tmp_path / "v.yaml"
    if content is not None:
        values.write_text(content)
    res = _main(capsys, monkeypatch, "-p", str(project), "--out", str(tmp_path / "out"), "--values", str(values))
    assert res.returncode == 2 and "v.yaml" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_folder_without_a_spec_exits_2(tmp_path, capsys, monkeypatch):
    res = _main(capsys, monkeypatch, "-p", str(tmp_path), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "loopml.yaml" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_out_that_is_a_file_exits_2(project, tmp_path, capsys, monkeypatch):
    (tmp_path / "taken").write_text("")
    res = _main(capsys, monkeypatch, "-p", str(project), "--out", str(tmp_path / "taken"))
    assert res.returncode == 2 and "--out" in res.stderr and "taken" in res.stderr, res.stderr
