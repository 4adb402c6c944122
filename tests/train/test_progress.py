"""The training job's progress record and what ``loopml status`` shows of it (no Ray here; the
Ray run's record is checked in tests/integration/test_ray_train.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from loopml.config import Workspace
from loopml.spec import load_spec
from loopml.train import progress
from loopml.train.torch_trainer import TorchTrainer
from tests.train.conftest import tabular_frame


def _beat(folder, rank, ts):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"rank-{rank}.json").write_text(json.dumps({"pid": 1, "rank": rank, "epoch": 2, "ts": ts}))


def test_workers_alive_counts_fresh_heartbeats(tmp_path):
    status = tmp_path / "status"
    path = progress.progress_file(tmp_path, "m")
    progress.start_progress(path, run_id="r1", backend="ray", workers=2, epochs=5, status_dir=str(status))
    assert progress.describe(progress.read_progress(tmp_path, "m")) == "starting on Ray: waiting for 2 worker(s); run r1"
    now = time.time()
    _beat(status, 0, now - 1)
    _beat(status, 1, now - progress.ALIVE_WITHIN_S - 5)  # a killed worker's last heartbeat
    progress.update_progress(path, epoch=2, restarts=1, resumed_at_epoch=1)
    r = progress.read_progress(tmp_path, "m", now=now)
    assert (r["state"], r["epoch"], r["workers_alive"], r["restarts"]) == ("running", 2, 1, 1)
    line = progress.describe(r)
    assert line.startswith("running on Ray: epoch 2/5, 1/2 workers alive, 1 restart(s), resumed at epoch 1")
    progress.finish_progress(path, ok=True)
    r = progress.read_progress(tmp_path, "m")
    assert r["state"] == "finished" and "workers_alive" not in r
    assert progress.describe(r).startswith("last job finished on Ray at ")


def test_a_running_record_whose_driver_died_reads_interrupted(tmp_path):
    path = progress.progress_file(tmp_path, "m")
    progress.start_progress(path, run_id=None, backend="local", workers=1, epochs=3)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    progress.update_progress(path, driver_pid=dead.pid)
    assert progress.read_progress(tmp_path, "m")["state"] == "interrupted"
    assert progress.read_progress(tmp_path, "other") is None


def test_in_process_torch_fit_writes_the_record_and_status_shows_it(torch_project, tmp_path):
    spec = load_spec(torch_project)
    ws = Workspace(tmp_path / "ws").init()
    seen = []
    real = progress.update_progress

    def spy(path, **fields):
        real(path, **fields)
        seen.append(progress.read_progress(ws.home, spec.name))

    progress.update_progress = spy
    try:
        trained = TorchTrainer().fit(spec, tabular_frame(300), workspace=ws)
    finally:
        progress.update_progress = real
    running = [s for s in seen if s["state"] == "running" and s["epoch"] > 0]
    assert [s["epoch"] for s in running] == list(range(1, trained.history["epochs"] + 1))
    assert all(s["workers_alive"] == 1 and "train_loss" in s for s in running)
    final = progress.read_progress(ws.home, spec.name)
    assert (final["state"], final["backend"], final["epoch"]) == ("finished", "local", trained.history["epochs"])

    env = {**os.environ, "LOOPML_HOME": str(ws.home), "COLUMNS": "200"}
    env.pop("LOOPML_TRACKING_URI", None)
    p = subprocess.run([sys.executable, "-m", "loopml.cli.main", "status", "--json", "--project", str(torch_project)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["training"]["state"] == "finished"
    p = subprocess.run([sys.executable, "-m", "loopml.cli.main", "status", "--project", str(torch_project)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "last job finished in-process at" in p.stdout and f"epoch {final['epoch']}/15" in p.stdout
