"""A server replica's prediction-log outbox on a remote home (``LOOPML_HOME=s3://...``, #11).

The writer (:mod:`loopml.monitor.predlog`) keeps sealing parts into the local folder; the
:class:`Publisher` thread uploads them to ``<home>/predictions/<model>/<replica>/`` every
``LOOPML_PREDICTION_LOG_PUBLISH_INTERVAL_S`` (2 s) and compacts this replica's prefix every
``compact_every`` seconds (:func:`loopml.monitor.remotelog.compact_replica`).

:func:`publish_sealed` renames each sealed part to ``pub.<replica>.<name>`` (the claim) before
its PUT and deletes it after: after a crash between the two, the next round uploads it again
under the same key, never a second copy under another replica. One object is one PUT, which
S3 makes visible whole or not at all.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from loopml.monitor.logfiles import PART_PREFIX

log = logging.getLogger("loopml.serve")
CLAIM = "pub."
PUBLISH_INTERVAL_S = 2.0


def publish_sealed(local: Path, remote, replica: str) -> int:
    """Upload every sealed local part of one model to ``remote/<replica>/`` (a
    :class:`~loopml.monitor.remotelog.RemoteFolder`), then delete it locally; returns how many
    were published. Call it under the local compaction lock (one publisher per outbox)."""
    prefix = f"{CLAIM}{replica}."
    try:
        names = sorted(os.listdir(local))
    except FileNotFoundError:
        return 0
    todo = []
    for name in names:
        if name.startswith(CLAIM):  # claimed by an earlier round that did not finish
            owner, _, part = name[len(CLAIM):].partition(f".{PART_PREFIX}")
            todo.append((local / name, owner, PART_PREFIX + part))
        elif name.startswith(PART_PREFIX) and name.endswith(".parquet"):
            claimed = local / f"{prefix}{name}"
            os.rename(local / name, claimed)  # the claim: from now on it goes to this replica only
            todo.append((claimed, replica, name))
    for path, owner, part in todo:
        (remote / owner / part).put(path.read_bytes())
        path.unlink()
    return len(todo)


class Publisher:
    """Publishes one model's outbox from a background thread. The constructor does no I/O."""

    def __init__(self, root: Path, model: str, url: str, *, compact_every: float = 0.0,
                 interval: float | None = None) -> None:
        self.root, self.model, self.url = Path(root), model, url
        self.compact_every = compact_every
        self.interval = interval if interval is not None else float(
            os.environ.get("LOOPML_PREDICTION_LOG_PUBLISH_INTERVAL_S") or PUBLISH_INTERVAL_S)
        self.published = 0  # parts uploaded
        self.compactions = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def publish_now(self, compact: bool = False) -> int:
        """Upload the sealed parts (and, with ``compact``, compact this replica's prefix)."""
        from loopml.monitor.compaction import compaction_lock
        from loopml.monitor.remotelog import compact_replica, model_folder, replica_id

        replica = replica_id()
        remote = model_folder(self.url, self.model)
        with compaction_lock(self.root / self.model, wait=True):
            n = publish_sealed(self.root / self.model, remote, replica)
            if compact:
                compact_replica(remote / replica)
                self.compactions += 1
        self.published += n
        return n

    def _round(self, compact: bool = False) -> None:
        try:
            self.publish_now(compact=compact)
        except Exception as e:  # noqa: BLE001 - the parts stay in the outbox; the next round retries
            self.errors += 1
            log.warning("%s: publishing the prediction log failed: %s: %s", self.model, type(e).__name__, e)

    def _run(self) -> None:
        last_compact = time.monotonic()
        while not self._stop.wait(self.interval):
            compact = self.compact_every > 0 and time.monotonic() - last_compact >= self.compact_every
            self._round(compact)
            if compact:
                last_compact = time.monotonic()

    def start(self) -> "Publisher":
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, daemon=True, name=f"predlog-publish-{self.model}")
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (the caller then closes the writer and calls :meth:`flush`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
            self._thread = None

    def flush(self) -> None:
        """One last round: what the writer sealed last goes out now, not with the next process."""
        self._round()
