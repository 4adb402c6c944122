"""``loopml up --no-server --server-url URL``: the chart's controller. It drives a ``loopml serve``
someone else runs (on Kubernetes: the server pods behind their Service), starts no server of its
own, leaves that server running when it stops, and takes the admin token from the environment
only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from loopml.loop.admin_client import ServerClient
from loopml.loop.server_process import free_port

TOKEN = "controller-only-t0ken"


def _wait(pred, timeout: float = 120.0) -> bool:
    """A bounded wait for a condition (not a timing assertion)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process below ``pid``, from /proc."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for child, pp in parent.items():
            if pp == p:
                try:
                    cmd = (Path("/proc") / str(child) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    cmd = ""
                out.append((child, cmd))
                todo.append(child)
    return out


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def test_up_no_server_drives_a_running_serve_and_starts_none(registered_model, project):
    from loopml.loop.state import StateStore

    ws, name = registered_model
    raw = yaml.safe_load((project / "loopml.yaml").read_text())
    raw["triggers"] = {"on_drift": False}  # nothing but the rollout below for the controller to do
    (project / "loopml.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "LOOPML_HOME": str(ws.home), "LOOPML_ADMIN_TOKEN": TOKEN}
    port, grpc = free_port(), free_port()
    serve = subprocess.Popen([sys.executable, "-m", "loopml.cli.main", "serve", "-m", f"{name}@champion",
                              "--host", "127.0.0.1", "--port", str(port), "--grpc-port", str(grpc),
                              "--poll-interval", "0.5"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    client = ServerClient(url, TOKEN)
    up = None
    try:
        assert _wait(client.healthy), "loopml serve did not become ready"
        # a rollout the controller resumes on start: its first step is a policy it must set on
        # the server at --server-url (v1 as its own challenger: a version the server can load)
        rollout = StateStore(ws.state_uri).start_rollout(name, challenger="1", champion="1")
        out = project / "up.out"
        with open(out, "w") as fh:
            up = subprocess.Popen([sys.executable, "-m", "loopml.cli.main", "up", "-p", str(project), "--no-server",
                                   "--server-url", url], env=env, stdout=fh, stderr=subprocess.STDOUT)
        assert _wait(lambda: (client.describe(name).get("policy") or {}).get("kind") == "shadow"), \
            (client.describe(name), out.read_text())
        assert f"driving the servers at {url}" in out.read_text()
        assert f"resuming rollout {rollout.id}" in out.read_text()
        assert up.poll() is None
        # no server of its own: no process below the controller, no record for one to adopt
        assert _descendants(up.pid) == []
        assert not (ws.home / "run" / "server.json").exists()
        assert TOKEN not in " ".join(up.args)
        assert _stop(up) == 0, out.read_text()
        # the server it drove is not its to stop
        assert serve.poll() is None and client.healthy()
    finally:
        if up is not None:
            _stop(up)
        _stop(serve)


def _main(capsys, monkeypatch, *args: str) -> tuple[int, str]:
    from loopml.cli.main import main

    monkeypatch.setattr(sys, "argv", ["loopml", "up", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("args, token, words", [
    (["--no-server"], TOKEN, ["--server-url", "not an http(s) URL"]),
    (["--no-server", "--server-url", "fraud-server:8080"], TOKEN, ["--server-url", "http://"]),
    (["--server-url", "http://fraud-server:8080"], TOKEN, ["--server-url", "only with --no-server"]),
    (["--no-server", "--server-url", "http://fraud-server:8080", "--port", "9000"], TOKEN, ["--port"]),
    (["--no-server", "--server-url", "http://fraud-server:8080"], None, ["LOOPML_ADMIN_TOKEN", "not set"]),
])
def test_bad_controller_only_options_exit_2_with_one_line(tmp_path, capsys, monkeypatch, args, token, words):
    """Refused before anything starts: no lock, no workspace, no pipeline."""
    if token is None:
        monkeypatch.delenv("LOOPML_ADMIN_TOKEN", raising=False)
    else:
        monkeypatch.setenv("LOOPML_ADMIN_TOKEN", token)
    monkeypatch.setenv("LOOPML_HOME", str(tmp_path / "home"))
    code, err = _main(capsys, monkeypatch, "-p", str(tmp_path), *args)
    assert code == 2, err
    assert "\n" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    assert TOKEN not in err
    assert not (tmp_path / "home").exists()
