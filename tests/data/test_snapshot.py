"""Snapshots: content-addressed ids, immutable folders, load and list."""

from __future__ import annotations

import json
import uuid

import fsspec
import numpy as np
import pandas as pd
import pytest

from loopml.config import Workspace
from loopml.data.snapshot import content_id, list_snapshots, load_snapshot, snapshot_dataset
from loopml.errors import DataSourceError, SnapshotNotFound


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace.from_env(tmp_path / "ws").init()


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "age": rng.integers(18, 90, 50),
        "income": rng.normal(50, 10, 50).round(3),
        "city": rng.choice(["paris", "lyon", "nice"], 50),
    })


def test_same_content_same_id_whatever_the_path_name_or_format(tmp_path, ws, frame):
    (tmp_path / "a").mkdir()
    frame.to_csv(tmp_path / "a" / "one.csv", index=False)
    frame.to_csv(tmp_path / "two.csv", index=False)
    frame.to_parquet(tmp_path / "three.parquet", index=False)
    ids = {snapshot_dataset(str(p), ws).id for p in (tmp_path / "a" / "one.csv", tmp_path / "two.csv", tmp_path / "three.parquet")}
    assert len(ids) == 1
    (only,) = ids
    assert only.startswith("ds-") and len(only) == 3 + 16
    assert len(list_snapshots(ws)) == 1


def test_different_content_gives_a_different_id(frame):
    changed = frame.copy()
    changed.loc[7, "income"] += 0.001
    renamed = frame.rename(columns={"city": "town"})
    widened = frame.astype({"age": "float64"})
    ids = {content_id(f) for f in (frame, changed, renamed, widened, frame.iloc[::-1].reset_index(drop=True))}
    assert len(ids) == 5


def test_index_labels_do_not_change_the_id(frame):
    relabelled = frame.set_axis(range(100, 150))
    assert content_id(relabelled) == content_id(frame)


def test_snapshot_folder_holds_data_meta_and_profile(ws, frame):
    snap = snapshot_dataset("in-memory", ws, df=frame)
    files = {p.name for p in snap.path.iterdir()}
    assert {"data.parquet", "meta.json", "profile.json", "profile_values.npz"} <= files
    meta = json.loads((snap.path / "meta.json").read_text())
    assert meta == {k: v for k, v in snap.to_dict().items() if k != "path"}
    assert meta["row_count"] == 50 and meta["schema"]["age"] == "int64"
    pd.testing.assert_frame_equal(snap.load_frame(), frame)
    profile = snap.load_profile()
    assert profile.row_count == 50
    assert profile.columns["age"].kind == "numeric" and profile.columns["city"].kind == "categorical"
    assert sum(profile.columns["city"].frequencies.values()) == 50
    assert len(profile.sorted_values["income"]) == 50


def test_reloaded_snapshot_data_hashes_to_the_same_id(ws, tmp_path):
    frame = pd.DataFrame({"n": [1.0, None, 3.0], "s": ["a", None, "c"], "b": [True, None, False]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    snap = snapshot_dataset(str(tmp_path / "t.csv"), ws)
    assert content_id(snap.load_frame()) == snap.id


def test_existing_snapshot_is_reused_unchanged(ws, frame):
    first = snapshot_dataset("first-source", ws, df=frame)
    (first.path / "marker").write_text("kept")
    second = snapshot_dataset("second-source", ws, df=frame.copy())
    assert second == first
    assert second.source == "first-source"
    assert (second.path / "marker").read_text() == "kept"
    assert [p.name for p in ws.snapshots.iterdir()] == [first.id]  # no temp folders left


def test_load_by_id_and_unique_prefix(ws, frame):
    snap = snapshot_dataset("x", ws, df=frame)
    assert load_snapshot(snap.id, ws) == snap
    assert load_snapshot(snap.id[:8], ws).id == snap.id


@pytest.mark.parametrize("bad", ["ds-0000000000000000", "../ws", "", ".hidden"])
def test_unknown_snapshot_raises_not_found(ws, frame, bad):
    snapshot_dataset("x", ws, df=frame)
    with pytest.raises(SnapshotNotFound) as info:
        load_snapshot(bad, ws)
    assert info.value.snapshot_id == bad
    assert "loopml data snapshot" in str(info.value)


def test_list_snapshots(ws, frame):
    assert list_snapshots(ws) == []
    a = snapshot_dataset("a", ws, df=frame)
    b = snapshot_dataset("b", ws, df=frame.head(10))
    assert {s.id for s in list_snapshots(ws)} == {a.id, b.id}


def test_snapshot_from_memory_url(ws, frame):
    url = f"memory://loopml-snap-{uuid.uuid4().hex}/t.parquet"
    with fsspec.open(url, "wb") as fh:
        frame.to_parquet(fh, index=False)
    snap = snapshot_dataset(url, ws)
    assert snap.source == url and snap.id == content_id(frame)


def test_relative_source_uses_base_dir(tmp_path, ws, frame):
    (tmp_path / "proj").mkdir()
    frame.to_csv(tmp_path / "proj" / "d.csv", index=False)
    assert snapshot_dataset("d.csv", ws, base_dir=tmp_path / "proj").row_count == 50


def test_unstorable_frame_leaves_nothing_behind(ws):
    mixed = pd.DataFrame({"v": pd.Series([1, "two", 3.5], dtype=object)})
    with pytest.raises(DataSourceError) as info:
        snapshot_dataset("mixed.csv", ws, df=mixed)
    assert "mixed.csv" in str(info.value) and "Parquet" in str(info.value)
    assert list(ws.snapshots.iterdir()) == []


def test_duplicate_column_names_are_rejected(ws):
    dup = pd.DataFrame([[1, 2]], columns=["a", "a"])
    with pytest.raises(DataSourceError, match=r"duplicate column names \['a'\]"):
        snapshot_dataset("dup", ws, df=dup)


def test_missing_source_raises_data_source_error(ws, tmp_path):
    with pytest.raises(DataSourceError, match="not found"):
        snapshot_dataset(str(tmp_path / "absent.csv"), ws)


def test_incomplete_folder_with_the_same_id_is_reported_not_overwritten(ws, frame):
    stale = ws.snapshots / content_id(frame)
    stale.mkdir()
    (stale / "data.parquet").write_text("half written")
    with pytest.raises(DataSourceError, match="not a complete snapshot"):
        snapshot_dataset("x", ws, df=frame)
    assert (stale / "data.parquet").read_text() == "half written"
    assert [p.name for p in ws.snapshots.iterdir()] == [stale.name]
