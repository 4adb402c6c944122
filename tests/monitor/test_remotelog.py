"""The prediction log on object storage (#11), on a ``file://`` store (same fsspec code path as
S3; the S3 run is tests/integration/test_platform_loop.py): each replica publishes its sealed
parts under its own prefix, readers see every replica's rows exactly once, window reads
download only the window's files, and a crash mid-publication or mid-compaction is invisible."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopml.config import LogRoot
from loopml.monitor.compaction import SimulatedCrash
from loopml.monitor.logfiles import JOURNAL
from loopml.monitor.logread import log_files, read_predictions
from loopml.monitor.predlog import write_part
from loopml.monitor.outbox import CLAIM, publish_sealed
from loopml.monitor.remotelog import RemoteFolder, cache_dir, compact_replica, model_folder, recover

H = 3600.0
T0 = 1_700_000_000.0 - (1_700_000_000.0 % H)


def _root(tmp_path: Path, machine: str) -> LogRoot:
    return LogRoot(tmp_path / machine / "predictions", remote_url=f"file://{tmp_path}/bucket/predictions")


def _part(root: Path, start: float, n: int, tag: str) -> list[str]:
    ids = [f"{tag}-{start + i:.0f}" for i in range(n)]
    write_part(Path(root) / "m", [{"request_id": rid, "ts": start + i, "model": "m", "version": "1",
                                   "variant": "champion", "inputs": {"x": float(i)}, "outputs": {"prediction": 1}}
                                  for i, rid in enumerate(ids)])
    return ids


def _publish(root: LogRoot, replica: str) -> int:
    return publish_sealed(Path(root) / "m", model_folder(root.remote_url, "m"), replica)


def _ids(root, **kw) -> list[str]:
    return sorted(read_predictions(root, "m", **kw)["request_id"])


def _two_replicas(tmp_path) -> tuple[LogRoot, list[str]]:
    a, b = _root(tmp_path, "a"), _root(tmp_path, "b")
    ids = []
    for k in range(3):
        ids += _part(a, T0 + k * H + 10, 5, "a")
        ids += _part(b, T0 + k * H + 20, 4, "b")
    assert _publish(a, "ra") == 3 and _publish(b, "rb") == 3
    assert not [p for p in (Path(a) / "m").iterdir() if p.suffix == ".parquet"]  # the outbox is empty
    return _root(tmp_path, "reader"), ids


def test_a_reader_sees_every_replicas_rows_once(tmp_path):
    reader, ids = _two_replicas(tmp_path)
    assert sorted(model_folder(reader.remote_url, "m").names()) == ["ra", "rb"]
    assert _ids(reader) == sorted(ids)
    assert len(log_files(reader, "m")) == 6
    newest = sorted(ids, key=lambda i: float(i.split("-")[1]))[-6:]  # spans both replicas
    assert sorted(read_predictions(reader, "m", last=6)["request_id"]) == sorted(newest)


def test_a_window_read_downloads_only_the_windows_files(tmp_path):
    reader, ids = _two_replicas(tmp_path)
    got = _ids(reader, since=T0 + H, until=T0 + 2 * H)
    assert got == sorted(i for i in ids if T0 + H <= float(i.split("-")[1]) < T0 + 2 * H)
    cached = sorted(p.parent.name for p in cache_dir(reader).rglob("*.parquet"))
    assert cached == ["ra", "rb"]  # one file of each replica: the other hours were never fetched


def test_a_crash_between_upload_and_delete_never_duplicates_rows(tmp_path):
    a = _root(tmp_path, "a")
    ids = _part(a, T0 + 10, 5, "a")
    local = next((Path(a) / "m").glob("part-*.parquet"))
    claimed = local.with_name(f"{CLAIM}dead-1.{local.name}")
    local.rename(claimed)  # claimed by replica dead-1 ...
    (model_folder(a.remote_url, "m") / "dead-1" / local.name).put(claimed.read_bytes())  # ... uploaded, then killed
    reader = _root(tmp_path, "reader")
    assert _ids(reader) == ids
    assert _publish(a, "new-2") == 1  # the next process finishes the claim under its owner's prefix
    assert not claimed.exists()
    assert model_folder(a.remote_url, "m").names() == ["dead-1"]
    assert _ids(reader) == ids


@pytest.mark.parametrize("step", ["after_first_put", "after_puts", "after_first_delete"])
def test_a_crash_mid_compaction_is_invisible_and_recovered(tmp_path, step):
    reader, ids = _two_replicas(tmp_path)
    for k in range(3):  # two parts per hour in replica ra
        ids += _part(tmp_path / "a" / "predictions", T0 + k * H + 40, 2, "a2")
    assert _publish(_root(tmp_path, "a"), "ra") == 3
    folder = model_folder(reader.remote_url, "m") / "ra"
    with pytest.raises(SimulatedCrash):
        compact_replica(folder, now=T0 + 4 * H, crash_at=step)
    assert _ids(reader) == sorted(ids)
    assert recover(folder) == ("undone" if step == "after_first_put" else "finished")
    assert _ids(reader) == sorted(ids)
    res = compact_replica(folder, now=T0 + 10 * H, closed_hour_grace_s=0)
    assert _ids(reader) == sorted(ids)
    assert not [n for n in folder.names() if n.startswith("part-")]  # every fresh part folded
    for rel_dir in ("date=", ):
        assert any(n.startswith(rel_dir) for n in folder.names())
    assert res["recovered"] is None


def test_compaction_merges_a_replicas_parts_per_hour_and_readers_see_rows_once(tmp_path):
    reader, ids = _two_replicas(tmp_path)
    ra = model_folder(reader.remote_url, "m") / "ra"
    assert compact_replica(ra, now=T0 + 10 * H)["parts_compacted"] == 3
    ids += _part(tmp_path / "a" / "predictions", T0 + 50, 3, "late")
    _publish(_root(tmp_path, "a"), "ra")
    compact_replica(ra, now=T0 + 10 * H, closed_hour_grace_s=0)
    hour0 = (ra / "date=2023-11-14" / "hour=22").names()
    assert len([n for n in hour0 if n.startswith("c-")]) == 1, hour0  # merged into one file
    assert _ids(reader) == sorted(ids)
    assert '"state": "done"' in (ra / JOURNAL).read_text()


def test_recorder_publishes_its_parts_on_close(tmp_path, monkeypatch):
    from loopml.serve.recorder import LogSettings, PredictionRecorder

    monkeypatch.setenv("LOOPML_REPLICA_ID", "replica-one")
    root = _root(tmp_path, "a")
    rec = PredictionRecorder(root, "m", settings=LogSettings(compact_interval_s=0)).start()
    rec.writer.append([{"request_id": f"r{i}", "ts": T0 + i, "model": "m", "version": "1", "variant": "champion",
                        "inputs": {"x": 1.0}, "outputs": {"prediction": 0}} for i in range(7)])
    rec.close()
    assert rec.publisher.published == 1 and rec.publisher.errors == 0
    assert model_folder(root.remote_url, "m").names() == ["replica-one"]
    assert _ids(_root(tmp_path, "reader")) == sorted(f"r{i}" for i in range(7))


def test_remote_folder_put_is_whole_or_absent(tmp_path):
    f = RemoteFolder(model_folder(f"file://{tmp_path}/b", "m").fs, f"{tmp_path}/b/x/obj")
    f.put(b"hello")
    assert f.read_bytes() == b"hello" and f.exists()
    assert not list(Path(tmp_path / "b" / "x").glob(".*"))  # no temp left behind
    f.rm()
    assert not f.exists()


def test_the_publisher_thread_publishes_and_compacts_while_rows_arrive(tmp_path, monkeypatch):
    import time

    from loopml.monitor.outbox import Publisher

    monkeypatch.setenv("LOOPML_REPLICA_ID", "r1")
    root = _root(tmp_path, "a")
    pub = Publisher(Path(root), "m", root.remote_url, compact_every=0.1, interval=0.05).start()
    ids = []
    try:
        for k in range(6):
            ids += _part(root, T0 + k * 600, 3, f"p{k}")
            time.sleep(0.1)
        reader = _root(tmp_path, "reader")
        deadline = time.monotonic() + 30
        folder = model_folder(root.remote_url, "m") / "r1"
        while time.monotonic() < deadline and (_ids(reader) != sorted(ids) or pub.compactions < 2
                                                or any(n.startswith("part-") for n in folder.names())):
            time.sleep(0.05)
    finally:
        pub.stop()
    pub.flush()
    assert pub.errors == 0 and pub.published == 6 and pub.compactions >= 2
    assert not [n for n in folder.names() if n.startswith("part-")]  # all folded into hour files
    assert _ids(_root(tmp_path, "reader2")) == sorted(ids)


def test_the_read_cache_drops_what_reads_no_longer_use(tmp_path):
    import os
    import time

    from loopml.monitor.remotelog import prune_cache

    reader, ids = _two_replicas(tmp_path)
    assert _ids(reader) == sorted(ids)
    cache = cache_dir(reader)
    files = sorted(cache.rglob("*.parquet"))
    assert len(files) == 6
    old = time.time() - 2 * 86_400
    for p in files:
        os.utime(p, (old, old))
    assert _ids(reader, since=T0 + 2 * H) == sorted(i for i in ids if float(i.split("-")[1]) >= T0 + 2 * H)
    assert prune_cache(cache) == 4  # the two files of the last read were touched and stay
    assert len(list(cache.rglob("*.parquet"))) == 2
    assert _ids(reader) == sorted(ids)  # what was dropped is downloaded again
