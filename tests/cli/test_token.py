"""``loopml token create|list|revoke`` and tokens never in argv (#11), through the real CLI."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from loopml.store.tokens import TokenStore


def cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "loopml.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=120, **kw)


@pytest.fixture
def env(tmp_path):
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    return dict(base, LOOPML_HOME=str(tmp_path / "ws"))


def test_create_prints_the_token_once_list_never_shows_it_revoke_removes_it(env, tmp_path):
    out = cli("token", "create", "ci-bot", "--role", "deployer", env=env)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert out.stdout == token + "\n" and token.startswith("loopml_") and "ci-bot" in out.stderr
    store = TokenStore(f"sqlite:///{tmp_path / 'ws' / 'state.db'}")
    assert store.verify(token).role == "deployer"
    listed = cli("token", "list", "--json", env=env)
    assert listed.returncode == 0 and token not in listed.stdout
    [row] = json.loads(listed.stdout)
    assert row["name"] == "ci-bot" and row["role"] == "deployer" and row["last_used"] is not None  # verify used it
    table = cli("token", "list", env=env).stdout
    assert "ci-bot" in table and "deployer" in table and token not in table
    assert cli("token", "create", "ci-bot", "--role", "viewer", env=env).returncode == 2  # name taken
    gone = cli("token", "revoke", "ci-bot", env=env)
    assert gone.returncode == 0 and "revoked" in gone.stdout, (gone.stdout, gone.stderr)
    assert store.verify(token) is None
    # only a hash was stored: the secret is nowhere in the database file (read last: closing a
    # second descriptor of a SQLite file drops this process's locks on it, a POSIX quirk)
    assert token.split("_")[-1].encode() not in (tmp_path / "ws" / "state.db").read_bytes()


@pytest.mark.parametrize("args,says", [
    (("token", "create", "x", "--role", "root"), "--role: 'root' is not a role"),
    (("token", "create", "env:LOOPML_ADMIN_TOKEN"), "reserved"),
    (("token", "revoke", "nobody"), "no such token"),
])
def test_bad_input_exits_2_with_one_line(env, args, says):
    out = cli(*args, env=env)
    assert out.returncode == 2 and says in out.stderr and len(out.stderr.strip().splitlines()) == 1


class _SlowAdmin(http.server.BaseHTTPRequestHandler):
    """An admin API that records the Authorization header and holds the answer until released,
    so the client process is alive while the test reads its argv."""

    seen: list[str] = []
    release = threading.Event()

    def do_GET(self):
        type(self).seen.append(self.headers.get("Authorization", ""))
        type(self).release.wait(30)
        data = b'{"name": "fraud"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def _argv(pid: int) -> str:
    ps = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True, text=True)
    return ps.stdout + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


@pytest.mark.parametrize("how", ["file", "LOOPML_TOKEN", "LOOPML_ADMIN_TOKEN"])
def test_the_token_is_sent_but_never_in_argv_or_output(env, tmp_path, how):
    secret = "loopml_0123456789ab_" + "S" * 43
    _SlowAdmin.seen, _SlowAdmin.release = [], threading.Event()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowAdmin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    args = [sys.executable, "-m", "loopml.cli.main", "traffic", "show", "fraud",
            "--url", f"http://127.0.0.1:{server.server_address[1]}"]
    if how == "file":
        (tmp_path / "tok").write_text(secret + "\n")
        args += ["--token-file", str(tmp_path / "tok")]
    else:
        env = dict(env, **{how: secret})
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not _SlowAdmin.seen and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert _SlowAdmin.seen == [f"Bearer {secret}"]
        assert "traffic show fraud" in _argv(child.pid) and secret not in _argv(child.pid)
        _SlowAdmin.release.set()
        out, err = child.communicate(timeout=60)
    finally:
        _SlowAdmin.release.set()
        child.kill()
        server.shutdown()
    assert child.returncode == 0, err
    assert secret not in out and secret not in err


def test_a_token_in_argv_is_refused_naming_where_it_goes(env):
    out = cli("traffic", "show", "fraud", "--token", "abc", env=env)
    assert out.returncode == 2 and "--token-file" in out.stderr and "LOOPML_TOKEN" in out.stderr
    assert "--token-file" in cli("traffic", "show", "--help", env=env).stdout
