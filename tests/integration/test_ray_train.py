"""Real Ray Train, in a private network namespace: a 2-worker TorchTrainer run in which one
worker is SIGKILLed mid-epoch resumes from the last checkpoint and registers a model."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import time

from loopml.config import Workspace
from loopml.registry.client import Registry
from tests.integration.ray_job import REPO, ray_command


def _beat(root, rank):
    for path in glob.glob(str(root / "ws" / "artifacts" / "ray-train" / "*" / "status" / f"rank-{rank}.json")):
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None
    return None


def registered_checkpoint(root):
    """Ray Train's controller collects reports every 2 s (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S) and
    writes this snapshot when it registers a checkpoint: only then is it the one a restart
    resumes from."""
    return bool(glob.glob(str(root / "ws" / "artifacts" / "ray-train" / "*" / "checkpoint_manager_snapshot.json")))


def should_kill(root):
    """Rank 1's heartbeat while it is in the second epoch (index 1) of its first attempt, once
    the first epoch's checkpoint is registered; else None."""
    beat = _beat(root, 1)
    if beat and beat["epoch"] == 1 and beat["resumed_at_epoch"] is None and registered_checkpoint(root):
        return beat
    return None


def test_killed_worker_resumes_from_checkpoint_and_registers(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("LOOPML_HOME", "LOOPML_TRACKING_URI")}
    proc = subprocess.Popen(ray_command(str(tmp_path), "2", "24000", "4"), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = None
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            beat = should_kill(tmp_path)
            if beat:
                os.kill(beat["pid"], signal.SIGKILL)
                killed = beat
                break
            time.sleep(0.02)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, out[-3000:]
    assert proc.returncode == 0, out[-3000:]
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    assert result["version"] == "1"

    reg = Registry(Workspace(tmp_path / "ws"))
    run = reg.client.get_run(result["run_id"])
    tags = run.data.tags
    assert tags["loopml.train.restarts"] == "1"
    assert int(tags["loopml.train.resumed_at_epoch"]) == killed["epoch"] == 1  # from epoch 0's checkpoint
    float(tags["loopml.train.restart_seconds"])  # recorded as a number; its size is the benchmark's business
    assert "recovery_to_epoch_seconds" in run.data.metrics
    steps = sorted({m.step for m in reg.client.get_metric_history(result["run_id"], "train_loss")})
    assert steps == [0, 1, 2, 3]  # every epoch logged once per step by rank 0 (the killed one re-run)
    assert reg.resolve("tab").version == "1"
    assert result["metrics"]["accuracy"] > 0.9
