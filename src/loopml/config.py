"""Settings and workspace paths (environment > arguments > defaults).

The workspace is one folder, ``./.loopml`` by default or ``$LOOPML_HOME``, that
holds all local state: MLflow tracking and registry on SQLite, artifacts,
dataset snapshots, the prediction log and the audit log.

``LOOPML_HOME`` may also be an object-store URL (``s3://bucket/prefix``, issue #11). The
workspace then has two parts: :attr:`Workspace.remote_home`, where everything machines share
is published (``snapshots/``, ``predictions/<model>/<replica>/``, ``reports/``), and a local
working folder, :attr:`Workspace.home` (``$LOOPML_LOCAL_DIR``, else
``$XDG_CACHE_HOME/loopml/<host>-<hash of the URL>``, i.e. ``~/.cache/loopml/...``) for what
must stay on the machine: pid files, sockets, the prediction log's outbox, read caches.
MLflow's SQLite file and the SQLite state store would be private to one machine, so a remote
home requires ``LOOPML_TRACKING_URI`` and ``LOOPML_STATE_URI`` (one-line error otherwise).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import sys
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
    remote_home: str | None = None  # "s3://bucket/prefix" when LOOPML_HOME is an object store

    @classmethod
    def from_env(cls, home: str | os.PathLike | None = None, tracking_uri: str | None = None) -> "Workspace":
        home = home or os.environ.get("LOOPML_HOME") or ".loopml"
        uri = tracking_uri or os.environ.get("LOOPML_TRACKING_URI") or None
        state = os.environ.get("LOOPML_STATE_URI") or None
        data = os.environ.get("LOOPML_DATA_URI") or None
        remote = remote_url(home)
        if remote is None:
            return cls(Path(home).resolve(), uri, state, data)
        for var, value in (("LOOPML_TRACKING_URI", uri), ("LOOPML_STATE_URI", state)):
            if not value or value.startswith(("sqlite:", "file:")) or "://" not in value:
                from loopml.errors import RemoteHomeNeedsServers

                raise RemoteHomeNeedsServers(remote, var)
        return cls(local_dir(remote), uri, state, data, remote)

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
        ``$LOOPML_DATA_URI`` (e.g. ``s3://bucket/prefix``), ``<remote home>/snapshots``, or the
        local ``snapshots`` folder."""
        if self.data_uri_override:
            return self.data_uri_override
        return f"{self.remote_home}/snapshots" if self.remote_home else str(self.snapshots)

    @property
    def predictions_uri(self) -> str | None:
        """Where server replicas publish sealed prediction-log parts (remote home only)."""
        return f"{self.remote_home}/predictions" if self.remote_home else None

    @property
    def reports_uri(self) -> str | None:
        """Where ``loopml monitor report`` publishes its HTML/JSON (remote home only)."""
        return f"{self.remote_home}/reports" if self.remote_home else None

    @property
    def data_remote(self) -> bool:
        """True when snapshots live on an fsspec URL other than the local folder; the local
        ``snapshots`` folder is then a read cache of immutable, content-named snapshots."""
        uri = self.data_uri
        return "://" in uri and not uri.startswith("file://")

    @property
    def predictions(self) -> Path:
        """The prediction log's root. With a remote home it is the local outbox of this
        machine's replicas and carries ``remote_url`` (see :class:`LogRoot`): writers publish
        sealed parts there and readers read every replica's published parts from there."""
        if self.remote_home:
            return LogRoot(self.home / "predictions", remote_url=self.predictions_uri)
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
        from several processes at once. A remote home is probed once: an object store that
        cannot be reached fails here (:class:`~loopml.errors.HomeStoreUnavailable`)."""
        if self.remote_home:
            from loopml.data import remote
            from loopml.errors import HomeStoreUnavailable

            remote.check_reachable(remote.store(self.remote_home), HomeStoreUnavailable)
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


_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):/+(.*)$")


def remote_url(home: str | os.PathLike) -> str | None:
    """``home`` as an object-store URL, or None for a local folder (``file://`` included).

    ``--home`` is parsed as a path by the CLI, which folds ``s3://b`` to ``s3:/b``; the scheme
    is recognised either way and the URL rebuilt with ``//``."""
    m = _SCHEME.match(os.fspath(home))
    if m is None or m.group(1).lower() == "file" or len(m.group(1)) == 1:  # "C:/" is a drive
        return None
    return f"{m.group(1).lower()}://{m.group(2).rstrip('/')}"


def local_dir(remote: str) -> Path:
    """The local working folder of a remote home: ``$LOOPML_LOCAL_DIR``, else a per-user cache
    folder named after the host and the URL (two homes never share one)."""
    explicit = os.environ.get("LOOPML_LOCAL_DIR")
    if explicit:
        return Path(explicit).resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(remote.encode()).hexdigest()[:12]
    return (cache / "loopml" / f"{socket.gethostname()}-{digest}").resolve()


class LogRoot(type(Path())):
    """A local prediction-log folder that also names the object-store prefix its sealed parts
    are published to (``remote_url``); paths derived from it are plain paths."""

    remote_url: str | None = None

    def __new__(cls, *args, remote_url: str | None = None):
        self = super().__new__(cls, *args)
        self.remote_url = remote_url
        return self

    if sys.version_info >= (3, 12):  # 3.12's Path takes its segments in __init__, not __new__
        def __init__(self, *args, remote_url: str | None = None) -> None:
            super().__init__(*args)

    def __truediv__(self, key):
        return Path(self) / key

    def __reduce__(self):
        return (_log_root, (str(self), self.remote_url))


def _log_root(path: str, url: str | None) -> "LogRoot":
    return LogRoot(path, remote_url=url)


def _mkdir_private(path: Path) -> None:
    """``mkdir -p`` after which ``path``, if this call created it, is 0700 whatever the umask;
    an existing folder is left as its owner set it, and so are created parents."""
    if path.is_dir():
        return
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)  # mkdir's mode is masked by the umask
