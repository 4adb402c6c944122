"""Settings and workspace paths (environment > arguments > defaults).

The workspace is one folder, ``./.loopml`` by default or ``$LOOPML_HOME``, that
holds all local state: MLflow tracking and registry on SQLite, artifacts,
dataset snapshots, the prediction log and the audit log.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

# The workspace holds prediction inputs, the registry and the audit log: only its owner reads it.
DIR_MODE = 0o700
FILE_MODE = 0o600


@dataclass(frozen=True)
class Workspace:
    """Paths of one loopml workspace. Constructing it does no I/O; see :meth:`init`."""

    home: Path
    tracking_uri_override: str | None = None
    state_uri_override: str | None = None
    data_uri_override: str | None = None

    @classmethod
    def from_env(cls, home: str | os.PathLike | None = None, tracking_uri: str | None = None) -> "Workspace":
        home = home or os.environ.get("LOOPML_HOME") or ".loopml"
        uri = tracking_uri or os.environ.get("LOOPML_TRACKING_URI") or None
        return cls(Path(home).resolve(), uri, os.environ.get("LOOPML_STATE_URI") or None,
                   os.environ.get("LOOPML_DATA_URI") or None)

    @property
    def tracking_uri(self) -> str:
        if self.tracking_uri_override:
            return self.tracking_uri_override
        return f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifacts(self) -> Path:
        return self.home / "artifacts"

    @property
    def snapshots(self) -> Path:
        return self.home / "snapshots"

    @property
    def data_uri(self) -> str:
        """Where snapshots (data + reference profile + metadata) are published:
        ``$LOOPML_DATA_URI`` (e.g. ``s3://bucket/prefix``) or the local ``snapshots`` folder."""
        return self.data_uri_override or str(self.snapshots)

    @property
    def data_remote(self) -> bool:
        """True when snapshots live on an fsspec URL other than the local folder; the local
        ``snapshots`` folder is then a read cache of immutable, content-named snapshots."""
        uri = self.data_uri
        return "://" in uri and not uri.startswith("file://")

    @property
    def predictions(self) -> Path:
        return self.home / "predictions"

    @property
    def audit_log(self) -> Path:
        return self.home / "audit.jsonl"

    @property
    def cache(self) -> Path:
        return self.home / "cache"

    @property
    def state_db(self) -> Path:
        """SQLite file for loopml's own transactional state (alerts, rollouts)."""
        return self.home / "state.db"

    @property
    def state_uri(self) -> str:
        """Where transactional state lives: ``$LOOPML_STATE_URI`` (e.g. ``postgresql://...``)
        or the workspace's SQLite file."""
        return self.state_uri_override or f"sqlite:///{self.state_db}"

    @property
    def lock_file(self) -> Path:
        return self.home / ".lock"

    @property
    def local_db(self) -> Path | None:
        """The workspace's own MLflow SQLite file, or None when tracking is elsewhere."""
        prefix = "sqlite:///"
        uri = self.tracking_uri
        return Path(uri[len(prefix):]) if uri.startswith(prefix) else None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """An inter-process lock on this workspace (``flock`` on ``.lock``), for one-time set-up
        that two processes must not do at once (creating folders, MLflow's schema)."""
        import fcntl

        _mkdir_private(self.home)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def init(self) -> "Workspace":
        """Create the folders (0700) and an empty MLflow database file (0600); safe to call
        from several processes at once."""
        _mkdir_private(self.home)
        with self.lock():
            for p in (self.artifacts, self.snapshots, self.predictions, self.cache):
                _mkdir_private(p)
            db = self.local_db
            if db is not None and db.parent == self.home and not db.exists():
                # SQLite would create it with the umask (world-readable); an empty file is a
                # valid empty database, so create it private first and let MLflow fill it.
                os.close(os.open(db, os.O_WRONLY | os.O_CREAT, FILE_MODE))
        return self


def _mkdir_private(path: Path) -> None:
    """``mkdir -p`` after which ``path``, if this call created it, is 0700 whatever the umask;
    an existing folder is left as its owner set it, and so are created parents."""
    if path.is_dir():
        return
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)  # mkdir's mode is masked by the umask
