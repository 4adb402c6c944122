"""A torch training job on Ray through the whole pipeline, run by tests and benchmarks in a
subprocess inside a private network namespace (see ``ray_command``).

``python -m tests.integration.ray_job ROOT WORKERS ROWS EPOCHS`` writes ROOT/proj, trains into
ROOT/ws and prints one JSON line ``RESULT {...}`` at the end; ``... ray_job tune ROOT`` runs
``loopml tune`` on two small projects (see ``tune_main``); ``... ray_job controller ROOT WORKERS
ROWS EPOCHS`` has the controller retrain on Ray (see ``controller_main``); ``... ray_job s3 ROOT
WORKERS ROWS EPOCHS`` checkpoints to a SeaweedFS S3 server (see ``s3_main``).
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


TUNE_SKLEARN = ({"estimator": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 300}},
                {"search_space": {"C": {"type": "loguniform", "low": 0.001, "high": 10.0}}, "num_samples": 4})
TUNE_TORCH = ({"kind": "torch", "params": {"hidden": [8]}, "epochs": 4, "batch_size": 32, "early_stopping": None},
              {"search_space": {"lr": {"type": "loguniform", "low": 0.0005, "high": 0.05},
                                "hidden": {"choice": [[8], [16]]}}, "num_samples": 4, "scheduler": "asha"})


def tune_main(root: Path) -> None:
    """``loopml tune`` (the CLI, in this process) on a scikit-learn and a torch project under one
    Ray start; prints ``TUNE <kind>`` then the command's output, per project."""
    import ray

    from loopml.cli.main import _mount, app
    from tests.train.conftest import write_project

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    _mount()
    # the second sklearn run: same spec, same data -> the same sampled configurations, same version
    for label, kind, (model, tuning), flags in (("sklearn", "sklearn", TUNE_SKLEARN, []),
                                                ("torch", "torch", TUNE_TORCH, ["--json"]),
                                                ("sklearn-again", "sklearn", TUNE_SKLEARN, ["--json"])):
        proj = write_project(root / kind, model, extra={"tuning": tuning}, n=400)
        print(f"TUNE {label}", flush=True)
        app(["tune", "--project", str(proj), "--home", str(root / f"ws-{kind}"), *flags], standalone_mode=False)
        print(f"END {label}", flush=True)
    ray.shutdown()


def _mark_registered(s3, marker: Path, done) -> None:
    """Touch ``marker`` once Ray Train has registered a checkpoint in the bucket (its snapshot
    object appears): the test outside the namespace cannot reach the store, it reads the file."""
    s3c = s3.client()
    while not done.is_set():
        listed = s3c.list_objects_v2(Bucket="ckpt-bucket", Prefix="ckpt/").get("Contents", [])
        if any(o["Key"].endswith("/checkpoint_manager_snapshot.json") for o in listed):
            marker.write_text("registered")
            return
        time.sleep(0.1)


def s3_main(root: Path, workers: int, rows: int, epochs: int) -> None:
    """Ray Train checkpoints on a real S3 server started here (inside the same namespace as
    Ray, so its workers reach it on 127.0.0.1): a wrong secret first fails the train step, then
    the job trains with ``checkpoint_uri: s3://ckpt-bucket/ckpt`` (ROOT/s3-checkpoint-registered
    appears once Ray has registered a checkpoint there, for a test that kills a worker); prints
    ``REFUSED <line>`` and ``RESULT {...}`` with the object keys in the bucket afterwards."""
    import os
    import threading

    from loopml.config import Workspace
    from loopml.errors import PipelineStepFailed
    from loopml.loop.pipeline import run_pipeline
    from loopml.platform.seaweed import SeaweedS3
    from loopml.spec import load_spec
    from loopml.train.ray_backend import checkpoint_storage
    from tests.train.conftest import write_project

    s3 = SeaweedS3(root / "s3", bucket="ckpt-bucket").start()
    try:
        os.environ.update(AWS_ENDPOINT_URL=s3.endpoint, AWS_ACCESS_KEY_ID=s3.access_key,
                          AWS_SECRET_ACCESS_KEY="not-the-secret")
        proj = write_project(root / "proj", {"kind": "torch", "params": {"hidden": [32]}, "epochs": epochs,
                                             "batch_size": 16, "lr": 0.005, "early_stopping": None},
                             extra={"training": {"backend": "ray", "workers": workers, "max_failures": 2,
                                                 "checkpoint_every": 1, "checkpoint_uri": "s3://ckpt-bucket/ckpt"}},
                             n=rows)
        spec = load_spec(proj)
        ws = Workspace(root / "ws").init()
        try:
            checkpoint_storage(spec, ws)
            print("REFUSED nothing", flush=True)
        except PipelineStepFailed as exc:
            print(f"REFUSED {exc}", flush=True)
        os.environ["AWS_SECRET_ACCESS_KEY"] = s3.secret_key()
        done = threading.Event()
        watcher = threading.Thread(target=_mark_registered, args=(s3, root / "s3-checkpoint-registered", done),
                                   daemon=True)
        watcher.start()
        try:
            r = run_pipeline(spec, ws, project_dir=proj,
                             on_step=lambda step, message: print(step, message, flush=True))
        finally:
            done.set()
            watcher.join()
        pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket="ckpt-bucket", Prefix="ckpt/")
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        local = sorted(str(p.relative_to(ws.home)) for p in ws.artifacts.rglob("checkpoint_*"))
        print("RESULT " + json.dumps({"version": r.version, "run_id": r.run_id, "metrics": r.metrics,
                                      "keys": keys, "local_checkpoints": local}), flush=True)
    finally:
        s3.stop()


class _NoServer:
    """The controller's server client when nothing serves (a first version is promoted, not rolled out)."""

    def set_policy(self, model, policy):
        pass

    def reload(self, model):
        pass

    def metrics_text(self) -> str:
        return ""


def controller_main(root: Path, workers: int, rows: int, epochs: int) -> None:
    """The controller retrains a torch model on Ray (``training.backend: ray``) for a manual
    trigger while a thread reads what ``loopml status`` shows (its ``_status``); prints
    ``RESULT {...}`` with the running snapshots seen, the final record and the champion."""
    import threading

    from loopml.cli.loop import _status
    from loopml.config import Workspace
    from loopml.loop.controller import Controller
    from loopml.registry.client import Registry
    from loopml.spec import load_spec
    from tests.train.conftest import write_project

    proj = write_project(root / "proj", {"kind": "torch", "params": {"hidden": [32]}, "epochs": epochs,
                                         "batch_size": 16, "lr": 0.005, "early_stopping": None},
                         extra={"training": {"backend": "ray", "workers": workers, "checkpoint_every": 1},
                                "triggers": {"on_drift": False},
                                # a single-row p99 on two shared cores is no gate for this test
                                "rollout": {"latency_budget_ms": None}}, n=rows)
    spec = load_spec(proj)
    ws = Workspace(root / "ws").init()
    ctl = Controller(spec, ws, _NoServer(), project_dir=proj, say=lambda m: print(m, flush=True))
    ctl.store.add_trigger(spec.name, "manual", "retrain on Ray")
    seen: list[dict] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            t = _status(proj, ws.home, None).get("training")
            if t and t["state"] == "running" and (not seen or (seen[-1]["epoch"], seen[-1]["workers_alive"])
                                                  != (t["epoch"], t["workers_alive"])):
                seen.append(t)
            time.sleep(0.25)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ctl.tick()
    done.set()
    watcher.join()
    champion = Registry(ws).try_resolve(spec.name)
    print("RESULT " + json.dumps({"seen": seen, "final": _status(proj, ws.home, None)["training"],
                                  "champion": champion.version if champion else None,
                                  "trigger": [t.to_dict() for t in ctl.store.triggers(spec.name, limit=1)]},
                                 default=str), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    a = sys.argv[1:]
    if a[0] == "tune":
        tune_main(Path(a[1]))
    elif a[0] == "s3":
        s3_main(Path(a[1]), int(a[2]), int(a[3]), int(a[4]))
    elif a[0] == "controller":
        controller_main(Path(a[1]), int(a[2]), int(a[3]), int(a[4]))
    else:
        main(Path(a[0]), int(a[1]), int(a[2]), int(a[3]), *(a[4:5] or []))
