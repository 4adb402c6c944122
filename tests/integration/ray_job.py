"""A torch training job on Ray through the whole pipeline, run by tests and benchmarks in a
subprocess inside a private network namespace (see ``ray_command``).

``python -m tests.integration.ray_job ROOT WORKERS ROWS EPOCHS`` writes ROOT/proj, trains into
ROOT/ws and prints one JSON line ``RESULT {...}`` at the end.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def ray_command(*args: str) -> list[str]:
    """Run this job in its own network namespace: Ray listens on every interface, and inside
    ``unshare -n`` only a loopback exists; RAY_AUTH_MODE=disabled only in there."""
    inner = " ".join([sys.executable, "-m", "tests.integration.ray_job", *args])
    return ["unshare", "-n", "sh", "-c", f"ip link set lo up && RAY_AUTH_MODE=disabled exec {inner}"]


def main(root: Path, workers: int, rows: int, epochs: int, backend: str = "ray") -> None:
    from loopml.config import Workspace
    from loopml.loop.pipeline import run_pipeline
    from loopml.spec import load_spec
    from tests.train.conftest import write_project

    proj = write_project(root / "proj", {"kind": "torch", "params": {"hidden": [32]}, "epochs": epochs,
                                         "batch_size": 16, "lr": 0.005, "early_stopping": None},
                         extra={"training": {"backend": backend, "workers": workers, "max_failures": 2,
                                             "checkpoint_every": 1}}, n=rows)
    spec = load_spec(proj)
    ws = Workspace(root / "ws").init()
    t0 = time.time()
    started: dict[str, float] = {}

    def on_step(step: str, message: str) -> None:
        started.setdefault(step, time.time())
        print(step, message, flush=True)

    r = run_pipeline(spec, ws, project_dir=proj, on_step=on_step)
    print("RESULT " + json.dumps({"seconds": time.time() - t0, "version": r.version, "run_id": r.run_id,
                                  "train_seconds": started["evaluate"] - started["train"],
                                  "metrics": r.metrics}), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    a = sys.argv[1:]
    main(Path(a[0]), int(a[1]), int(a[2]), int(a[3]), *(a[4:5] or []))
