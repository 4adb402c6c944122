"""serve/policy_store.py: the state the workers of one master share (policies, endpoint set, acks)."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

from loopml.serve.policy_store import PolicyFiles, SharedEndpoints
from loopml.serve.traffic import TrafficPolicy


def _publish_many(home: str, worker: int, n: int) -> None:
    shared = SharedEndpoints(home, group=1, pid=1000 + worker)
    for i in range(n):
        shared.publish("load", {}, f"m{worker}-{i}", "champion")


def test_publish_applies_each_change_to_the_published_set(tmp_path):
    shared = SharedEndpoints(tmp_path, group=7)
    assert shared.read() == (0, None)
    assert shared.publish("unload", {"a": "champion", "b": "3"}, "a") == 1  # first change: from this worker's set
    assert shared.read() == (1, {"b": "3"})
    assert shared.publish("load", {"ignored": "x"}, "c", "challenger") == 2  # then: from the published set
    assert shared.publish("touch", {}) == 3
    assert shared.read() == (3, {"b": "3", "c": "challenger"})


def test_concurrent_publishers_lose_no_change(tmp_path):
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_publish_many, [str(tmp_path)] * 2, [0, 1], [25, 25]))
    generation, endpoints = SharedEndpoints(tmp_path, group=1).read()
    assert generation == 50 and len(endpoints) == 50


def test_changed_sees_each_new_generation_once(tmp_path):
    writer, reader = SharedEndpoints(tmp_path, group=3), SharedEndpoints(tmp_path, group=3)
    assert reader.changed() is False  # nothing published yet
    writer.publish("touch", {"a": "champion"})
    assert reader.changed() is True and reader.changed() is False
    writer.publish("unload", {}, "a")
    assert reader.changed() is True


def test_pending_counts_live_workers_only(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    me = SharedEndpoints(tmp_path, group=5)
    gone = SharedEndpoints(tmp_path, group=5, pid=int(dead.stdout))
    gone.ack(-1)  # a worker that died before applying anything
    me.ack(-1)
    assert me.pending(1) == (0, 1)  # the dead one is not waited for (and its file is gone)
    me.ack(1)
    assert me.pending(1) == (1, 1)
    assert not (me.dir / f"{gone.pid}.ack").exists()


def test_policy_written_by_one_worker_is_seen_by_another(tmp_path):
    a, b = PolicyFiles(tmp_path), PolicyFiles(tmp_path)
    assert b.changed(["m"]) == {}
    a.save("m", TrafficPolicy(kind="canary", weight=0.3))
    assert b.changed(["m"])["m"].weight == 0.3
    assert b.changed(["m"]) == {}
