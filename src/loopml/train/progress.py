"""A training job's progress record, for ``loopml status``: ``<home>/training/<model>.json``.

The trainer's driver writes it when a fit starts and ends (state, back end, workers, epochs,
run id, where the workers' heartbeats are); during the fit the loop's rank 0 updates the epoch,
the last losses and the restarts after each epoch (so on Ray it needs the workspace on a
filesystem the workers share, as the checkpoints already do). Workers alive is counted when
the record is read, from the per-rank heartbeats (:mod:`loopml.train.ray_backend`) younger than
:data:`ALIVE_WITHIN_S`; a "running" record whose driver process is gone reads "interrupted".
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

ALIVE_WITHIN_S = 30.0  # a heartbeat is written every few batches; validation/checkpoints pause it


def progress_file(home: Path | str, model: str) -> Path:
    return Path(home) / "training" / f"{model}.json"


def _read(path: Path | str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def update_progress(path: Path | str, **fields: Any) -> None:
    """Merge ``fields`` into the record (atomic replace; the last writer of a field wins)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**(_read(path) or {}), **fields, "updated": time.time()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, default=str))
    os.replace(tmp, path)


def start_progress(path: Path | str, *, run_id: str | None, backend: str, workers: int, epochs: int,
                   status_dir: str | None = None) -> None:
    """A new job's record (replacing the last job's)."""
    path = Path(path)
    path.unlink(missing_ok=True)
    update_progress(path, state="running", run_id=run_id, backend=backend, workers=workers, epochs=epochs, epoch=0,
                    restarts=0, started=time.time(), driver_pid=os.getpid(), driver_host=socket.gethostname(),
                    status_dir=status_dir)


def finish_progress(path: Path | str, ok: bool) -> None:
    update_progress(path, state="finished" if ok else "failed", finished=time.time())


def _driver_gone(record: dict) -> bool:
    from loopml.procs import pid_alive

    pid = record.get("driver_pid")
    return bool(pid) and record.get("driver_host") == socket.gethostname() and not pid_alive(int(pid))


def read_progress(home: Path | str, model: str, now: float | None = None) -> dict | None:
    """The record with ``workers_alive`` (running jobs) and an ``interrupted`` state when its
    driver died without finishing it; None when no job has run."""
    record = _read(progress_file(home, model))
    if record is None:
        return None
    if record.get("state") == "running":
        if _driver_gone(record):
            record["state"] = "interrupted"
        elif record.get("status_dir"):
            now = time.time() if now is None else now
            beats = [_read(p) for p in Path(record["status_dir"]).glob("rank-*.json")]
            record["workers_alive"] = sum(1 for b in beats if b and now - float(b.get("ts", 0)) < ALIVE_WITHIN_S)
        else:
            record["workers_alive"] = record.get("workers", 1)  # in-process: the driver is the worker
    return record


def describe(record: dict) -> str:
    """One line for ``loopml status``."""
    epochs = f"epoch {record.get('epoch', 0)}/{record.get('epochs', '?')}"
    restarts = record.get("restarts") or 0
    resumed = f", resumed at epoch {record['resumed_at_epoch']}" if record.get("resumed_at_epoch") is not None else ""
    where = "on Ray" if record.get("backend") == "ray" else "in-process"
    run = f"; run {str(record.get('run_id'))[:12]}" if record.get("run_id") else ""
    state = record.get("state")
    if state == "running" and record.get("workers_alive") == 0 and not record.get("epoch"):
        return f"starting {where}: waiting for {record.get('workers', '?')} worker(s){run}"
    if state == "running":
        alive = f"{record.get('workers_alive', '?')}/{record.get('workers', '?')} workers alive"
        return f"running {where}: {epochs}, {alive}, {restarts} restart(s){resumed}{run}"
    when = time.strftime("%H:%M:%S", time.localtime(record.get("finished") or record.get("updated") or 0))
    return f"last job {state} {where} at {when}: {epochs}, {restarts} restart(s){resumed}{run}"
