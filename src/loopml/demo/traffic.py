"""Live traffic for the demo and the tests: rows sent one per request to ``/invocations``."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
from rich.progress import Progress

from loopml.config import Workspace
from loopml.errors import LoopmlError, ServeError

VERSION_HEADER = "x-loopml-model-version"


def _send(client, rec: dict, request_id: str | None = None) -> tuple[int, str]:
    import orjson

    body = orjson.dumps({"dataframe_records": [rec]}, option=orjson.OPT_SERIALIZE_NUMPY)
    headers = {"content-type": "application/json"}
    if request_id is not None:
        headers["x-request-id"] = request_id  # so labels arriving later join to this prediction
    r = client.post("/invocations", content=body, headers=headers)
    return r.status_code, r.headers.get(VERSION_HEADER, "?")


def _post(client, rec: dict, request_id: str | None = None) -> str:
    status, version = _send(client, rec, request_id)
    if status != 200:
        raise LoopmlError(f"server answered {status} (version {version}) during replay")
    return version


def replay(url: str, frame: pd.DataFrame, features: list[str], progress: Progress | None = None,
           label: str = "replay", workers: int = 8, id_column: str | None = None) -> dict[str, int]:
    """Send each row as its own request to ``/invocations`` (``id_column`` as its request id);
    count the versions that answered."""
    import httpx

    ids = frame[id_column].astype(str).tolist() if id_column else [None] * len(frame)
    records = list(zip(ids, frame[features].to_dict(orient="records")))
    task = progress.add_task(label, total=len(records)) if progress else None

    def send(chunk: list[tuple]) -> dict[str, int]:
        local: dict[str, int] = {}
        with httpx.Client(base_url=url, timeout=30) as client:
            for rid, rec in chunk:
                v = _post(client, rec, rid)
                local[v] = local.get(v, 0) + 1
                if progress:
                    progress.advance(task)
        return local

    counts: dict[str, int] = {}
    with ThreadPoolExecutor(workers) as pool:
        for local in pool.map(send, [records[i::workers] for i in range(workers)]):
            for k, v in local.items():
                counts[k] = counts.get(k, 0) + v
    return counts


class Traffic:
    """Background traffic: rows sent one per request, round and round, until stopped (bounded).

    ``rate`` caps the total requests per second (None: as fast as the workers go).
    """

    def __init__(self, url: str, frame: pd.DataFrame, features: list[str], workers: int = 3,
                 max_requests: int = 200_000, rate: float | None = None) -> None:
        self.url, self.records, self.workers, self.max_requests = url, frame[features].to_dict(orient="records"), workers, max_requests
        self.interval = workers / rate if rate else 0.0
        self.stop_event = threading.Event()
        self.counts: dict[str, int] = {}  # successful answers by version
        self.failures: dict[str, int] = {}  # failed answers by version ("?" when none answered)
        self.errors = 0
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _run(self, offset: int) -> None:
        import httpx

        i, sent = offset, 0
        next_at = time.monotonic()
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop_event.is_set() and sent < self.max_requests // self.workers:
                if self.interval:
                    next_at += self.interval
                    self.stop_event.wait(max(0.0, next_at - time.monotonic()))
                try:
                    status, v = _send(client, self.records[i % len(self.records)])
                except httpx.HTTPError:
                    status, v = 0, "?"
                i += self.workers
                sent += 1
                with self._lock:
                    if status == 200:
                        self.counts[v] = self.counts.get(v, 0) + 1
                    else:
                        self.errors += 1
                        self.failures[v] = self.failures.get(v, 0) + 1

    def __enter__(self) -> "Traffic":
        self._threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(self.workers)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        for t in self._threads:
            t.join(timeout=30)


def wait_for_log(workspace: Workspace, model: str, rows: int, timeout: float = 20.0) -> int:
    from loopml.monitor.predlog import read_predictions

    deadline = time.monotonic() + timeout
    while True:
        n = len(read_predictions(workspace.predictions, model))
        if n >= rows or time.monotonic() > deadline:
            return n
        time.sleep(0.25)


def wait_for_version(url: str, row: pd.DataFrame, version: str, timeout: float = 30.0) -> str:
    """Send ``row`` until the server answers with model ``version``; returns that version
    (raises :class:`~loopml.errors.ServeError` when it still answers with another after ``timeout``)."""
    import httpx
    import orjson

    body = orjson.dumps({"dataframe_records": row.to_dict(orient="records")}, option=orjson.OPT_SERIALIZE_NUMPY)
    deadline = time.monotonic() + timeout
    seen = "?"
    while time.monotonic() < deadline:
        r = httpx.post(f"{url}/invocations", content=body, headers={"content-type": "application/json"}, timeout=10)
        seen = r.headers.get(VERSION_HEADER, "?")
        if seen == version:
            return seen
        time.sleep(0.25)
    raise ServeError(f"the server still answers with version {seen}, expected {version} after {timeout:.0f} s")
