"""Snapshots on object storage (LOOPML_DATA_URI=s3://...) on the session's real SeaweedFS, and
the local default. Two workspace folders with one LOOPML_DATA_URI stand for two machines."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid

import numpy as np
import pandas as pd
import pytest

from loopml.config import Workspace
from loopml.data.snapshot import list_snapshots, load_snapshot, snapshot_dataset
from loopml.errors import DataStoreUnavailable, SnapshotNotFound
from loopml.platform.objstore import ObjectHome


@pytest.fixture
def s3_env(platform_env, monkeypatch) -> dict:
    for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(k, platform_env[k])
    return platform_env


@pytest.fixture
def data_uri(s3_env) -> str:
    return f"s3://loopml/data-{uuid.uuid4().hex[:8]}"  # a prefix per test


def _frame(n: int = 50, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(size=n), "plan": rng.choice(["a", "b"], n), "y": rng.integers(0, 2, n)})


def _machine(tmp_path, name: str, uri: str | None) -> Workspace:
    return Workspace(tmp_path / name, data_uri_override=uri).init()


def test_workspace_data_uri_defaults_to_local_snapshots(tmp_path, monkeypatch):
    monkeypatch.delenv("LOOPML_DATA_URI", raising=False)
    ws = Workspace.from_env(tmp_path / "h")
    assert ws.data_uri == str(ws.snapshots) and not ws.data_remote
    monkeypatch.setenv("LOOPML_DATA_URI", "s3://b/p")
    ws = Workspace.from_env(tmp_path / "h")
    assert ws.data_uri == "s3://b/p" and ws.data_remote and ws.snapshots == ws.home / "snapshots"


def test_second_machine_lists_and_loads_what_the_first_wrote(tmp_path, data_uri):
    first = _machine(tmp_path, "trainer", data_uri)
    second = _machine(tmp_path, "server", data_uri)
    assert list_snapshots(second) == []
    df = _frame()
    snap = snapshot_dataset("train.csv", first, df=df)

    # One publication holding data, profile and metadata, named by the snapshot id.
    files = ObjectHome(data_uri).read(snap.id)
    assert set(files) == {"data.parquet", "meta.json", "profile.json", "profile_values.npz"}

    listed = list_snapshots(second)
    assert [s.id for s in listed] == [snap.id] and listed[0].row_count == 50
    assert not (second.snapshots / snap.id).exists()  # listing reads metadata only
    pd.testing.assert_frame_equal(listed[0].load_frame(), df)  # first read fetches it
    got = load_snapshot(snap.id[:8], second)  # a unique prefix works too
    assert got.id == snap.id and got.path == second.snapshots / snap.id
    assert got.load_profile().to_dict() == snap.load_profile().to_dict()
    # The same content snapshotted on the second machine is the same snapshot, not a new one.
    again = snapshot_dataset("elsewhere.csv", second, df=df)
    assert again.id == snap.id and again.source == "train.csv"
    with pytest.raises(SnapshotNotFound):
        load_snapshot("ds-0000", second)


def test_reader_never_sees_an_unpublished_snapshot(tmp_path, data_uri):
    """Files written under a version folder without the manifest (a writer that crashed before
    its publication point) are invisible to list and load."""
    ws = _machine(tmp_path, "reader", data_uri)
    home = ObjectHome(data_uri)
    home._put(home._path("ds-deadbeefdeadbeef", "v-crashed", "meta.json"), b'{"id": "ds-deadbeefdeadbeef"}')
    assert list_snapshots(ws) == []
    with pytest.raises(SnapshotNotFound):
        load_snapshot("ds-deadbeefdeadbeef", ws)


def test_registry_reference_profile_comes_from_the_store(tmp_path, data_uri):
    from types import SimpleNamespace

    from loopml.registry.client import SNAPSHOT_TAG, Registry

    snap = snapshot_dataset("t.csv", _machine(tmp_path, "trainer", data_uri), df=_frame())
    server = _machine(tmp_path, "server", data_uri)
    client = Registry(server)  # no I/O until used; reference_profile reads only the workspace
    ref = SimpleNamespace(name="m", version="1", tags={SNAPSHOT_TAG: snap.id})
    assert client.reference_profile(ref).to_dict() == snap.load_profile().to_dict()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_store_is_an_error_not_an_empty_list(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    ws = _machine(tmp_path, "m", "s3://loopml/p")
    with pytest.raises(DataStoreUnavailable, match="LOOPML_DATA_URI=s3://loopml/p"):
        list_snapshots(ws)


def test_missing_bucket_is_an_error(tmp_path, s3_env):
    ws = _machine(tmp_path, "m", f"s3://no-such-{uuid.uuid4().hex[:8]}/p")
    with pytest.raises(DataStoreUnavailable, match="does not exist"):
        list_snapshots(ws)


def test_cli_unreachable_store_exits_2_with_one_line(tmp_path):
    csv = tmp_path / "t.csv"
    _frame(5).to_csv(csv, index=False)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LOOPML_DATA_URI": "s3://loopml/p",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}", "AWS_ACCESS_KEY_ID": "k",
           "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "us-east-1"}
    import os

    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-m", "loopml.cli.main", "data", "snapshot", str(csv),
                          "--home", str(tmp_path / "h")], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "LOOPML_DATA_URI=s3://loopml/p" in lines[0], out.stderr


def test_local_default_unchanged(tmp_path, monkeypatch):
    monkeypatch.delenv("LOOPML_DATA_URI", raising=False)
    ws = Workspace.from_env(tmp_path / "h").init()
    snap = snapshot_dataset("t.csv", ws, df=_frame())
    assert snap.path == ws.snapshots / snap.id and (snap.path / "meta.json").exists()
    assert [s.id for s in list_snapshots(ws)] == [snap.id]
    assert load_snapshot(snap.id, ws).to_dict() == snap.to_dict()
