"""LOOPML_HOME on object storage (#11): the settings it derives, what it refuses, and (on the
session's real SeaweedFS) that an unreachable store fails closed and a reachable one is used."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from loopml.config import Workspace, remote_url
from loopml.errors import HomeStoreUnavailable, RemoteHomeNeedsServers

SERVERS = {"LOOPML_TRACKING_URI": "http://127.0.0.1:5000", "LOOPML_STATE_URI": "postgresql://u@127.0.0.1/db"}


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for k in ("LOOPML_HOME", "LOOPML_TRACKING_URI", "LOOPML_STATE_URI", "LOOPML_DATA_URI", "LOOPML_LOCAL_DIR"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return monkeypatch


def test_remote_url_recognises_object_stores_and_the_cli_folded_form():
    assert remote_url("s3://bucket/prefix/") == "s3://bucket/prefix"
    assert remote_url(Path("s3://bucket/prefix")) == "s3://bucket/prefix"  # --home folds // to /
    assert remote_url("gs://b") == "gs://b"
    assert remote_url(".loopml") is None and remote_url("/tmp/x") is None
    assert remote_url("file:///tmp/x") is None


def test_remote_home_derives_object_locations_and_a_local_cache(clean_env, tmp_path):
    for k, v in SERVERS.items():
        clean_env.setenv(k, v)
    ws = Workspace.from_env("s3://bkt/team")
    assert ws.remote_home == "s3://bkt/team"
    assert ws.data_uri == "s3://bkt/team/snapshots" and ws.data_remote
    assert ws.predictions_uri == "s3://bkt/team/predictions"
    assert ws.reports_uri == "s3://bkt/team/reports"
    assert ws.home.parent == tmp_path / "xdg" / "loopml"  # the per-user cache folder
    assert ws.tracking_uri == SERVERS["LOOPML_TRACKING_URI"] and ws.local_db is None
    assert ws.state_uri == SERVERS["LOOPML_STATE_URI"]
    assert Workspace.from_env("s3://bkt/other").home != ws.home  # one local folder per home
    root = ws.predictions
    assert root == ws.home / "predictions" and root.remote_url == "s3://bkt/team/predictions"
    assert pickle.loads(pickle.dumps(root)).remote_url == root.remote_url  # crosses to workers
    assert not hasattr(root / "m", "remote_url") or (root / "m").remote_url is None


def test_local_dir_and_data_uri_overrides(clean_env, tmp_path):
    for k, v in SERVERS.items():
        clean_env.setenv(k, v)
    clean_env.setenv("LOOPML_LOCAL_DIR", str(tmp_path / "here"))
    clean_env.setenv("LOOPML_DATA_URI", "s3://elsewhere/snaps")
    ws = Workspace.from_env("s3://bkt/team")
    assert ws.home == tmp_path / "here" and ws.data_uri == "s3://elsewhere/snaps"


@pytest.mark.parametrize("missing", ["LOOPML_TRACKING_URI", "LOOPML_STATE_URI"])
def test_remote_home_refuses_machine_private_stores(clean_env, missing):
    for k, v in SERVERS.items():
        if k != missing:
            clean_env.setenv(k, v)
    with pytest.raises(RemoteHomeNeedsServers, match=f"set {missing}$"):
        Workspace.from_env("s3://bkt/team")
    clean_env.setenv(missing, "sqlite:////tmp/x.db")  # a SQLite file is private to one machine too
    with pytest.raises(RemoteHomeNeedsServers, match=missing):
        Workspace.from_env("s3://bkt/team")


def test_local_home_unchanged(clean_env, tmp_path):
    ws = Workspace.from_env(tmp_path / "h")
    assert ws.remote_home is None and ws.predictions_uri is None and ws.reports_uri is None
    assert ws.data_uri == str(ws.snapshots) and not ws.data_remote
    assert type(ws.predictions) is type(Path())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _csv(tmp_path) -> str:
    (tmp_path / "t.csv").write_text("x,y\n1.0,0\n2.0,1\n")
    return str(tmp_path / "t.csv")


def _cli_env(tmp_path, **extra) -> dict:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
           "AWS_REGION": "us-east-1", **SERVERS, **extra}
    return env


def test_cli_missing_state_uri_exits_2_with_one_line(tmp_path):
    env = _cli_env(tmp_path, LOOPML_HOME="s3://bkt/team")
    del env["LOOPML_STATE_URI"]
    out = subprocess.run([sys.executable, "-m", "loopml.cli.main", "data", "snapshot", _csv(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "LOOPML_STATE_URI" in lines[0], out.stderr


def test_cli_unreachable_home_exits_2_with_one_line(tmp_path):
    env = _cli_env(tmp_path, AWS_ENDPOINT_URL=f"http://127.0.0.1:{_closed_port()}", AWS_ACCESS_KEY_ID="k",
                   AWS_SECRET_ACCESS_KEY="s")
    out = subprocess.run([sys.executable, "-m", "loopml.cli.main", "data", "snapshot", _csv(tmp_path),
                          "--home", "s3://bkt/team"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "LOOPML_HOME=s3://bkt/team" in lines[0], out.stderr


def test_reachable_home_publishes_snapshots_under_it(clean_env, tmp_path, platform_env):
    from loopml.data.snapshot import list_snapshots, snapshot_dataset
    from loopml.platform.objstore import ObjectHome
    import pandas as pd

    for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        clean_env.setenv(k, platform_env[k])
    for k, v in SERVERS.items():
        clean_env.setenv(k, v)
    home = f"s3://loopml/home-{uuid.uuid4().hex[:8]}"
    clean_env.setenv("LOOPML_LOCAL_DIR", str(tmp_path / "a"))
    a = Workspace.from_env(home).init()
    snap = snapshot_dataset("t.csv", a, df=pd.DataFrame({"x": [1.0, 2.0], "y": [0, 1]}))
    assert ObjectHome(f"{home}/snapshots").published(snap.id)
    clean_env.setenv("LOOPML_LOCAL_DIR", str(tmp_path / "b"))
    b = Workspace.from_env(home).init()  # another machine
    assert [s.id for s in list_snapshots(b)] == [snap.id]
    with pytest.raises(HomeStoreUnavailable, match="does not exist"):
        Workspace.from_env(f"s3://no-such-{uuid.uuid4().hex[:8]}/p").init()
