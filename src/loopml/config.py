"""Settings and workspace paths (environment > arguments > defaults).

The workspace is one folder, ``./.loopml`` by default or ``$LOOPML_HOME``, that
holds all local state: MLflow tracking and registry on SQLite, artifacts,
dataset snapshots, the prediction log and the audit log.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    """Paths of one loopml workspace. Constructing it does no I/O; see :meth:`init`."""

    home: Path
    tracking_uri_override: str | None = None

    @classmethod
    def from_env(cls, home: str | os.PathLike | None = None, tracking_uri: str | None = None) -> "Workspace":
        home = home or os.environ.get("LOOPML_HOME") or ".loopml"
        uri = tracking_uri or os.environ.get("LOOPML_TRACKING_URI") or None
        return cls(Path(home).resolve(), uri)

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

    def init(self) -> "Workspace":
        for p in (self.home, self.artifacts, self.snapshots, self.predictions, self.cache):
            p.mkdir(parents=True, exist_ok=True)
        return self
