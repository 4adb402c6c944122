"""Ray as the training back end (``training.backend: ray``).

A torch model trains under Ray Train's ``TorchTrainer``: ``training.workers`` DDP workers over
gloo on CPU (one intra-op thread each), checkpoints (the loop's whole state, ``torch.save``d and
read back with ``weights_only=True``) every ``checkpoint_every`` epochs into
``training.checkpoint_uri`` (``s3://bucket/prefix``, which every machine of a cluster can
reach, or a folder; default the workspace's artifact store), and ``FailureConfig(max_failures)``: when a worker dies, Ray
restarts the group and every worker resumes from the last checkpoint. Rank 0 alone logs the
per-epoch metrics to the MLflow run, and on a resume the restart: tags
``loopml.train.restarts`` / ``loopml.train.resumed_at_epoch`` and the metric
``restart_seconds`` (last heartbeat of the failed attempt -> training running again).

Every worker writes ``<status>/rank-<r>.json`` (pid, epoch, batch, time) as it goes: the
heartbeat the restart time is measured from, and what a test or ``loopml status`` reads (with
the job's progress record that rank 0 updates each epoch, :mod:`loopml.train.progress`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from typing import Any, Iterator

RAY_ADDRESS_ENV = "LOOPML_RAY_ADDRESS"
STATE_FILE = "loop_state.pt"
HEARTBEAT_EVERY_S = 0.05


def _ray():
    try:
        import ray
    except ImportError:
        from loopml.errors import SpecError

        raise SpecError("loopml.yaml", "training.backend: ray needs Ray; install the extra: "
                                       "pip install 'loopml[ray]'") from None
    return ray


@contextlib.contextmanager
def ray_session(spec: Any) -> Iterator[None]:
    """Connect to ``training.ray_address`` / ``LOOPML_RAY_ADDRESS``, or start a local Ray on this
    machine's cores (stopped after); an already initialised Ray is used as it is."""
    ray = _ray()
    if ray.is_initialized():
        yield
        return
    address = spec.training.ray_address or os.environ.get(RAY_ADDRESS_ENV) or None
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _write_json(path: str, data: dict) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _tracker(config: dict) -> Any:
    """Rank 0's handle on the pipeline's MLflow run (None when nothing is tracked)."""
    if not config.get("run_id"):
        return None
    from pathlib import Path

    from loopml.config import Workspace
    from loopml.registry.client import Registry, TrackedRun

    ws = Workspace(Path(config["home"]), config["tracking_uri"])
    return TrackedRun(Registry(ws).client, config["run_id"], config["experiment_id"])


def _worker_loop(config: dict) -> None:
    """Runs in every Ray Train worker: resume from the last checkpoint if any, train, report."""
    import ray.train
    import torch
    from ray.train import Checkpoint
    from ray.train.torch import prepare_model

    from loopml.train.progress import update_progress
    from loopml.train.torch_loop import LoopState, run_epochs
    from loopml.train.torch_trainer import build_module

    torch.set_num_threads(1)  # one core per worker; intra-op threads would fight over it
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    status = config["status_dir"]
    cfg = config["loop"]
    torch.manual_seed(cfg.seed)
    module = prepare_model(build_module(config["module"], config["in_features"], config["out_features"],
                                        config["params"]))
    state, resumed_at, restart_s = None, None, None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = LoopState.from_dict(torch.load(os.path.join(d, STATE_FILE), weights_only=True))
        resumed_at = state.epoch
        beats = [_read_json(os.path.join(status, f"rank-{r}.json")) for r in range(world)]
        last = max((b["ts"] for b in beats if b), default=None)
        restart_s = time.time() - last if last else None
    tracker = _tracker(config) if rank == 0 else None
    if rank == 0 and resumed_at is not None:
        log = (_read_json(os.path.join(status, "restarts.json")) or {"list": []})["list"]
        log.append({"resumed_at_epoch": resumed_at, "restart_seconds": restart_s, "ts": time.time()})
        restarts = len(log)
        _write_json(os.path.join(status, "restarts.json"), {"list": log})
        update_progress(config["progress_file"], restarts=restarts, resumed_at_epoch=resumed_at, epoch=resumed_at)
    if tracker is not None and resumed_at is not None:
        tracker.set_tags({"loopml.train.restarts": restarts, "loopml.train.resumed_at_epoch": resumed_at,
                          "loopml.train.restart_seconds": f"{restart_s:.2f}" if restart_s else "unknown"})
        if restart_s is not None:
            tracker.log_metrics({"restart_seconds": restart_s}, step=restarts)
    attempt_started = time.time()
    last_beat = [0.0]

    def on_batch(epoch: int, batch: int) -> None:
        now = time.time()
        if now - last_beat[0] >= HEARTBEAT_EVERY_S:
            last_beat[0] = now
            _write_json(os.path.join(status, f"rank-{rank}.json"),
                        {"pid": os.getpid(), "rank": rank, "epoch": epoch, "batch": batch, "ts": now,
                         "resumed_at_epoch": resumed_at})

    def on_epoch(st: LoopState, metrics: dict[str, float]) -> None:
        done = st.epoch >= cfg.epochs or st.stopped_early
        if rank == 0:
            update_progress(config["progress_file"], epoch=st.epoch, **metrics)
        if tracker is not None:
            tracker.log_metrics(metrics, step=st.epoch - 1)
            if resumed_at is not None and st.epoch == resumed_at + 1:
                # kill -> resumed -> the next epoch finished (the recovery figure)
                tracker.log_metrics({"recovery_to_epoch_seconds": (restart_s or 0) + time.time() - attempt_started})
        report = {**metrics, "epoch": st.epoch}
        if done or st.epoch % config["checkpoint_every"] == 0:
            with tempfile.TemporaryDirectory(prefix="loopml-ckpt-") as d:
                if rank == 0:
                    torch.save(st.to_dict(), os.path.join(d, STATE_FILE))
                ray.train.report(report, checkpoint=Checkpoint.from_directory(d) if rank == 0 else None)
        else:
            ray.train.report(report)

    run_epochs(module, config["X"], config["y"], config["X_val"], config["y_val"], cfg, state=state,
               rank=rank, world=world, on_epoch=on_epoch, on_batch=on_batch)


def fit_torch_on_ray(spec: Any, data: Any, cfg: Any, init: dict[str, Any], run: Any,
                     workspace: Any = None) -> tuple[dict, dict]:
    """Train under Ray Train's TorchTrainer; returns (best weights, history). The job's progress
    record (:mod:`loopml.train.progress`) is started here and finished whatever happens."""
    import torch

    _ray()
    from loopml.config import Workspace
    from loopml.train.progress import finish_progress, progress_file, start_progress

    ws = workspace or Workspace.from_env()
    name = f"{spec.name}-{getattr(run, 'run_id', None) or int(time.time() * 1000)}"
    storage = checkpoint_storage(spec, ws)  # fails the step here, before Ray starts
    # heartbeats and the restart log stay in the workspace: the driver and `loopml status` read them
    status = ws.artifacts / "ray-train" / name / "status"
    status.mkdir(parents=True, exist_ok=True)
    t = spec.training
    config = {"X": data.X, "y": data.y, "X_val": data.X_val, "y_val": data.y_val, "loop": cfg,
              "module": spec.model.module, "in_features": init["in_features"], "out_features": init["out_features"],
              "params": {k: v for k, v in init.items() if k not in ("in_features", "out_features")},
              "checkpoint_every": t.checkpoint_every, "status_dir": str(status),
              "run_id": getattr(run, "run_id", None), "experiment_id": getattr(run, "experiment_id", None),
              "home": str(ws.home), "tracking_uri": ws.tracking_uri,
              "progress_file": str(progress_file(ws.home, spec.name))}
    start_progress(config["progress_file"], run_id=config["run_id"], backend="ray", workers=t.workers,
                   epochs=cfg.epochs, status_dir=str(status))
    ok = False
    try:
        result = _fit_on_ray(spec, config, storage, name)
        ok = result.checkpoint is not None
    finally:
        finish_progress(config["progress_file"], ok)
    if result.checkpoint is None:
        from loopml.errors import PipelineStepFailed

        raise PipelineStepFailed("train", f"Ray Train finished without a checkpoint ({result.error})")
    with result.checkpoint.as_directory() as d:
        state = torch.load(os.path.join(d, STATE_FILE), weights_only=True)
    restarts = (_read_json(str(status / "restarts.json")) or {"list": []})["list"]
    return state["best_state"], {"epochs": state["epoch"], "stopped_early": state["stopped_early"],
                                 "history": state["history"], "restarts": restarts, "status_dir": str(status)}


def _s3_filesystem(uri: str) -> Any:
    """A pyarrow S3 file system from the standard AWS variables (what every worker is handed, so
    a worker on another machine writes to the same store). Short timeouts and one attempt: a
    store that does not answer should fail the step now, not after minutes of retries."""
    from urllib.parse import urlparse

    from pyarrow import fs

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    opts: dict[str, Any] = {}
    if endpoint:
        u = urlparse(endpoint)
        opts.update(endpoint_override=u.netloc or u.path, scheme=u.scheme or "https")
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        opts.update(access_key=os.environ["AWS_ACCESS_KEY_ID"],
                    secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", ""))
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return fs.S3FileSystem(region=region or "us-east-1", connect_timeout=3, request_timeout=10,
                           retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=1), **opts)


def checkpoint_storage(spec: Any, ws: Any) -> tuple[str, Any]:
    """``(storage_path, storage_filesystem)`` for Ray Train's RunConfig from
    ``training.checkpoint_uri``. An ``s3://`` store is probed with a write and a delete first:
    unreachable, a missing bucket or refused credentials fail the train step with one line
    naming the setting; there is no fallback to a local folder a cluster could not share."""
    uri = spec.training.checkpoint_uri
    if not uri:
        return str(ws.artifacts / "ray-train"), None
    if not uri.startswith("s3://"):
        path = os.path.abspath(os.path.expanduser(uri))
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            from loopml.errors import PipelineStepFailed

            raise PipelineStepFailed("train", f"training.checkpoint_uri {uri}: cannot create the folder "
                                              f"({exc.strerror})") from None
        return path, None
    path = uri[len("s3://"):].rstrip("/")
    probe = f"{path}/.loopml-probe-{os.getpid()}"
    try:
        s3 = _s3_filesystem(uri)
        with s3.open_output_stream(probe) as f:
            f.write(b"ok")
        s3.delete_file(probe)
    except (OSError, ValueError) as exc:
        from loopml.errors import PipelineStepFailed

        reason = " ".join(str(exc).split())[:200]
        raise PipelineStepFailed("train", f"training.checkpoint_uri {uri}: the object store refused a test write "
                                          f"({reason}); check the bucket and AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
                                          f"AWS_SECRET_ACCESS_KEY") from None
    return path, s3


def _fit_on_ray(spec: Any, config: dict, storage: tuple[str, Any], name: str) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig
    from ray.train.torch import TorchTrainer as RayTorchTrainer

    t = spec.training
    with ray_session(spec):
        trainer = RayTorchTrainer(
            _worker_loop, train_loop_config=config, torch_config=TorchConfig(backend="gloo"),
            scaling_config=ScalingConfig(num_workers=t.workers, use_gpu=False,
                                         resources_per_worker={"CPU": t.cpus_per_worker}),
            run_config=RunConfig(name=name, storage_path=storage[0], storage_filesystem=storage[1],
                                 failure_config=FailureConfig(max_failures=t.max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2)))
        return trainer.fit()
