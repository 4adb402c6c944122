"""Compaction of the prediction log: hour folders, crash at every step, lock, retention, pruned reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from loopml.monitor.compaction import SimulatedCrash, compact_log, compaction_lock
from loopml.monitor.logfiles import JOURNAL, parse_name
from loopml.monitor.logread import log_files, read_predictions
from loopml.monitor.predlog import PredictionLogWriter, write_part

H = 3600.0
T0 = 1_700_000_000.0 - (1_700_000_000.0 % H)  # an hour boundary (UTC)


def part(root: Path, start: float, n: int, step: float = 1.0, tag: str = "r") -> list[str]:
    ids = [f"{tag}{start + i * step:.3f}" for i in range(n)]
    write_part(root / "m", [{"request_id": rid, "ts": start + i * step, "model": "m", "version": "1",
                             "variant": "champion", "inputs": {"x": float(i)}, "outputs": {"prediction": i % 2}}
                            for i, rid in enumerate(ids)])
    return ids


def history(root: Path) -> list[str]:
    """Three hours of parts; one part straddles an hour boundary; one is a legacy-named part."""
    ids = []
    for k in range(6):
        ids += part(root, T0 + k * 1800 + 10, 5)
    ids += part(root, T0 + H - 2, 4)  # rows on both sides of T0 + 1h
    legacy = part(root, T0 + 2 * H + 5, 3, tag="L")
    p = next(p for p in (root / "m").iterdir() if p.name.startswith("part-") and _has(p, "L"))
    p.rename(p.with_name("part-0000000000001-abcdefabcdef.parquet"))  # today's old name format
    return ids + legacy


def _has(path: Path, tag: str) -> bool:
    import pyarrow.parquet as pq

    return pq.read_table(path).column("request_id")[0].as_py().startswith(tag)


def ids_of(root: Path, **kw) -> list[str]:
    return sorted(read_predictions(root, "m", **kw)["request_id"])


def flat_parts(root: Path) -> list[str]:
    return [p.name for p in (root / "m").iterdir() if p.name.startswith("part-")]


def test_parts_fold_into_hour_folders_with_every_row_once(tmp_path):
    ids = history(tmp_path)
    window = {"since": T0 + 1800, "until": T0 + H + 1}
    before_window = ids_of(tmp_path, **window)
    res = compact_log(tmp_path, "m", now=T0 + 10 * H)
    assert res.parts_compacted == 8 and not flat_parts(tmp_path)
    hours = sorted(str(p.relative_to(tmp_path / "m").parent) for p in (tmp_path / "m").rglob("c-*.parquet"))
    assert set(hours) == {"date=2023-11-14/hour=22", "date=2023-11-14/hour=23", "date=2023-11-15/hour=00"}
    assert ids_of(tmp_path) == sorted(ids)
    assert ids_of(tmp_path, **window) == before_window and len(before_window) == 5 + 3  # part 1 and 3 rows of the straddler
    assert len(read_predictions(tmp_path, "m", last=4)) == 4
    assert list(read_predictions(tmp_path, "m", last=3)["request_id"]) == [f"r{T0 + 5 * 1800 + 10 + i:.3f}" for i in (2, 3, 4)]


RECOVERY = {"after_temp": None, "after_journal": "undone", "after_first_rename": "undone",
            "after_renames": "finished", "after_first_delete": "finished", "after_deletes": "finished"}


@pytest.mark.parametrize("step", ["after_temp", "after_journal", "after_first_rename", "after_renames",
                                  "after_first_delete", "after_deletes"])
def test_a_crash_at_any_step_is_invisible_to_readers_and_recovered(tmp_path, step):
    ids = history(tmp_path)
    compact_log(tmp_path, "m", now=T0 + 10 * H)  # hour files exist; the next round merges them
    ids += part(tmp_path, T0 + 30, 3, tag="n")  # late parts for two closed hours: two outputs, so
    ids += part(tmp_path, T0 + H + 30, 3, tag="o")  # a crash can fall between their renames
    with pytest.raises(SimulatedCrash):
        compact_log(tmp_path, "m", now=T0 + 10 * H, crash_at=step)
    assert ids_of(tmp_path) == sorted(ids)  # no row twice, none missing
    assert ids_of(tmp_path, since=T0, until=T0 + 600) == sorted(i for i in ids if float(i[1:]) < T0 + 600)
    res = compact_log(tmp_path, "m", now=T0 + 10 * H)
    assert res.recovered == RECOVERY[step]
    assert ids_of(tmp_path) == sorted(ids)
    assert json.loads((tmp_path / "m" / JOURNAL).read_text())["state"] == "done"
    assert not [p for p in (tmp_path / "m").rglob("*") if p.name.endswith(".tmp")]
    assert not flat_parts(tmp_path)
    assert all(len(list(d.glob("c-*.parquet"))) == 1 for d in (tmp_path / "m").glob("date=*/hour=*"))


def test_closed_hours_merge_into_one_file_and_the_open_hour_waits(tmp_path):
    part(tmp_path, T0 + 10, 3)
    compact_log(tmp_path, "m", now=T0 + 100)
    part(tmp_path, T0 + 20, 3)
    compact_log(tmp_path, "m", now=T0 + 200)
    hour = next((tmp_path / "m").glob("date=*/hour=*"))
    assert len(list(hour.glob("c-*.parquet"))) == 2  # the hour is still open: left as it is
    res = compact_log(tmp_path, "m", now=T0 + H + 601)
    assert res.hours_merged == 1 and len(list(hour.glob("c-*.parquet"))) == 1
    f = parse_name(next(hour.glob("c-*.parquet")).name)
    assert f.rows == 6 and f.min_ms == int((T0 + 10) * 1000) and f.max_ms == int((T0 + 22) * 1000)
    assert len(ids_of(tmp_path)) == 6


def test_retention_by_age_then_by_size_keeps_the_newest_hour(tmp_path):
    for k in range(5):
        part(tmp_path, T0 + k * H + 1, 50)
    compact_log(tmp_path, "m", now=T0 + 5 * H)
    res = compact_log(tmp_path, "m", now=T0 + 5 * H, retention_s=3 * H)  # hours 0 and 1 ended >= 3 h ago
    assert res.deleted_by_age == 2 and len(ids_of(tmp_path)) == 150
    res = compact_log(tmp_path, "m", now=T0 + 5 * H, max_bytes=1)
    assert res.deleted_by_size == 2 and len(ids_of(tmp_path)) == 50  # the newest hour always stays
    assert sorted(ids_of(tmp_path))[0].startswith(f"r{T0 + 4 * H + 1:.3f}"[:8])


def test_a_second_compactor_skips_while_the_lock_is_held_and_a_killed_holder_releases_it(tmp_path):
    part(tmp_path, T0 + 1, 3)
    with compaction_lock(tmp_path / "m") as held:
        assert held and compact_log(tmp_path, "m", now=T0 + 10) is None
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "m" / ".compact.lock")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert compact_log(tmp_path, "m", now=T0 + 10) is None and flat_parts(tmp_path)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert compact_log(tmp_path, "m", now=T0 + 10).parts_compacted == 1
    finally:
        proc.kill()
    assert not flat_parts(tmp_path) and len(ids_of(tmp_path)) == 3


def test_a_window_read_never_opens_files_outside_the_window(tmp_path):
    for k in range(4):
        part(tmp_path, T0 + k * H + 1, 10)
    compact_log(tmp_path, "m", now=T0 + 10 * H)
    recent = part(tmp_path, T0 + 4 * H + 1, 10)
    for old in (tmp_path / "m").glob("date=*/hour=*/c-*.parquet"):
        old.write_bytes(b"not parquet")  # opening any of these would fail the read
    window = {"since": T0 + 4 * H, "until": T0 + 5 * H}
    assert ids_of(tmp_path, **window) == sorted(recent)
    assert ids_of(tmp_path, last=10) == sorted(recent)
    assert log_files(tmp_path, "m", **window) == [str(tmp_path / "m" / name) for name in flat_parts(tmp_path)]


def test_readers_see_every_row_once_while_writers_and_compaction_run(tmp_path):
    w = PredictionLogWriter(tmp_path, "m", flush_rows=20, flush_interval_s=0.005).start()
    stop = threading.Event()
    errors: list[BaseException] = []
    counts: list[int] = []

    def read_loop():
        while not stop.is_set():
            try:
                df = read_predictions(tmp_path, "m")
                assert df["request_id"].is_unique
                counts.append(len(df))
            except BaseException as e:  # noqa: BLE001 - surfaced below
                errors.append(e)
                return

    def compact_loop():
        while not stop.is_set():
            try:
                compact_log(tmp_path, "m", closed_hour_grace_s=0, now=time.time() + 2 * H)  # merges hours too
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
                return

    threads = [threading.Thread(target=read_loop), threading.Thread(target=compact_loop)]
    for t in threads:
        t.start()
    for i in range(60):
        n = 10
        w.append_columns({"request_id": [f"q{i}-{j}" for j in range(n)], "ts": time.time() - (i % 3) * H,
                          "model": "m", "version": "1", "variant": "c"}, {"x": list(range(n))}, {"prediction": [0] * n}, n)
        time.sleep(0.004)
    w.close()
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]
    assert len(counts) > 3 and counts == sorted(counts)  # never a row twice, never one lost on the way
    assert len(read_predictions(tmp_path, "m")) == 600
