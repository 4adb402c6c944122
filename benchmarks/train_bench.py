"""Training on Ray: recovery after a killed worker, Ray's overhead, 1 vs 2 workers.

Each run is the whole pipeline on the same generated tabular data (24,000 rows, 4 epochs of a
32-unit MLP, batch 16), in a subprocess inside a private network namespace (``unshare -n``;
Ray listens on every interface). Printed side by side:

- recovery: SIGKILL of one of 2 workers in epoch 2, once epoch 1's checkpoint is registered
  (see tests/integration/test_ray_train.should_kill) -> training running again
  (``restart_seconds``, from the killed attempt's last heartbeat) and -> the next epoch done
  (``recovery_to_epoch_seconds``), against the target of 30 s (the seed projects': 180 s);
- overhead: the train step in-process vs Ray with 1 worker (same work; Ray's figure includes
  starting a local Ray) and Ray with 2 workers.

Run: ``make bench-train`` (``.venv/bin/python benchmarks/train_bench.py``). Needs root for unshare.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.ray_job import ray_command  # noqa: E402
from tests.integration.test_ray_train import should_kill  # noqa: E402

ROWS, EPOCHS = "24000", "4"


def run(root: Path, workers: int, backend: str = "ray", kill: bool = False) -> dict:
    cmd = ray_command(str(root), str(workers), ROWS, EPOCHS, backend)
    env = {k: v for k, v in os.environ.items() if k not in ("LOOPML_HOME", "LOOPML_TRACKING_URI")}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed_at = None
    while kill and killed_at is None and proc.poll() is None:
        beat = should_kill(root)
        if beat:
            os.kill(beat["pid"], signal.SIGKILL)
            killed_at = time.time()
        time.sleep(0.02)
    out, _ = proc.communicate(timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"run failed:\n{out[-3000:]}")
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    if kill:
        from loopml.config import Workspace
        from loopml.registry.client import Registry

        data = Registry(Workspace(root / "ws")).client.get_run(result["run_id"]).data
        result["restart_seconds"] = data.metrics.get("restart_seconds")
        result["recovery_to_epoch_seconds"] = data.metrics.get("recovery_to_epoch_seconds")
        result["resumed_at_epoch"] = data.tags.get("loopml.train.resumed_at_epoch")
        result["killed"] = killed_at is not None
    print(f"{root.name}: {json.dumps(result)}", flush=True)
    return result


def _s(value) -> str:
    return "n/a" if value is None else f"{value:.1f}s"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="loopml-train-bench-") as tmp:
        tmp = Path(tmp)
        rec = run(tmp / "kill", 2, kill=True)
        local = run(tmp / "local", 1, backend="local")
        one = run(tmp / "ray1", 1)
        two = run(tmp / "ray2", 2)
    print(f"data: {ROWS} rows, {EPOCHS} epochs, MLP(32), batch 16, machine: {os.cpu_count()} cores")
    print(f"{'figure':44} {'loopml':>10} {'anchor':>24}")
    print(f"{'recovery: kill -> training running again':44} {_s(rec['restart_seconds']):>10} {'target 30 s (seeds 180 s)':>24}")
    print(f"{'recovery: kill -> next epoch done':44} {_s(rec['recovery_to_epoch_seconds']):>10} {'target 30 s (seeds 180 s)':>24}")
    print(f"{'  (resumed at epoch index)':44} {str(rec['resumed_at_epoch']):>10} {'killed during index 1':>24}")
    print(f"{'train step, Ray 1 worker (incl. Ray start)':44} {one['train_seconds']:>9.1f}s "
          f"{'in-process ' + format(local['train_seconds'], '.1f') + ' s':>24}")
    print(f"{'train step, Ray 2 workers (incl. Ray start)':44} {two['train_seconds']:>9.1f}s "
          f"{'Ray 1 worker ' + format(one['train_seconds'], '.1f') + ' s':>24}")
    print(f"{'holdout accuracy (local / 1 / 2 workers)':44} "
          f"{local['metrics']['accuracy']:.3f} / {one['metrics']['accuracy']:.3f} / {two['metrics']['accuracy']:.3f}")


if __name__ == "__main__":
    main()
