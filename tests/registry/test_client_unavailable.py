"""Registry errors are not "not found" (#8): a tracking server that is stopped, answers 500 or
answers 403 raises RegistryUnavailable, quickly, and `loopml run` against it changes nothing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loopml.config import Workspace
from loopml.errors import ModelNotFound, RegistryUnavailable
from loopml.registry.client import HTTP_BOUNDS, Registry


class _Stub:
    """A misbehaving tracking server: answers ``status`` with a plain-text body to everything."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.requests = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                stub.requests += 1
                body = f"nope ({stub.status})".encode()
                self.send_response(stub.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "_Stub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _closed_port_uri() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens once the socket is closed


@pytest.fixture(params=["stopped", 500, 403])
def broken_uri(request, monkeypatch):
    for k in HTTP_BOUNDS:
        monkeypatch.delenv(k, raising=False)
    if request.param == "stopped":
        yield _closed_port_uri(), request.param
        return
    with _Stub(request.param) as stub:
        yield stub.uri, request.param


def test_resolve_and_try_resolve_raise_unavailable(broken_uri, tmp_path):
    uri, kind = broken_uri
    reg = Registry(Workspace(tmp_path / "ws", tracking_uri_override=uri))
    with pytest.raises(RegistryUnavailable) as info:
        reg.resolve("fraud")
    assert info.value.http_status == 503 and info.value.exit_code == 2
    assert "\n" not in str(info.value) and uri in str(info.value)
    if kind == 403:
        assert "access denied" in str(info.value)
    with pytest.raises(RegistryUnavailable):
        reg.try_resolve("fraud")  # never None: None means "no champion yet"
    with pytest.raises(RegistryUnavailable):
        reg.experiment_id("fraud")  # the first call of `loopml run`
    # the bounds were only in force during the calls
    assert not any(k in os.environ for k in HTTP_BOUNDS)


def test_not_found_is_still_not_found(registered_model):
    ws, name = registered_model
    reg = Registry(ws)
    assert reg.try_resolve("nosuch") is None and reg.try_resolve(name, "7") is None
    assert reg.try_resolve(name, "no-such-alias") is None
    with pytest.raises(ModelNotFound):
        reg.resolve("nosuch")
    assert reg.versions("nosuch") == []


def test_retries_are_bounded_and_a_users_setting_wins(tmp_path, monkeypatch):
    for k in HTTP_BOUNDS:
        monkeypatch.delenv(k, raising=False)
    with _Stub(500) as stub:
        reg = Registry(Workspace(tmp_path / "ws", tracking_uri_override=stub.uri))
        with pytest.raises(RegistryUnavailable):
            reg.resolve("fraud")
        assert stub.requests == 1 + int(HTTP_BOUNDS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])  # MLflow alone: 1 + 7
        stub.requests = 0
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        with pytest.raises(RegistryUnavailable):
            reg.resolve("fraud")
        assert stub.requests == 1
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"


def test_loopml_run_against_a_broken_registry_exits_2_and_changes_nothing(broken_uri, tmp_path):
    from loopml.demo.project import scaffold_project

    uri, _ = broken_uri
    proj = scaffold_project(tmp_path / "proj", rows=600)
    home = tmp_path / "ws"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LOOPML_"))}
    env.update(LOOPML_HOME=str(home), COLUMNS="200")
    # the timeout is a hang guard only: before #8 this took minutes of MLflow retries
    p = subprocess.run([sys.executable, "-m", "loopml.cli.main", "run", "-p", str(proj), "--tracking-uri", uri],
                       env=env, capture_output=True, text=True, timeout=90)
    err = p.stderr.strip()
    assert p.returncode == 2, err[-2000:]
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: model registry at " + uri) and "unavailable" in err
    assert "promoted" not in p.stdout
    assert not (home / "audit.jsonl").exists() and not (home / "mlflow.db").exists()
