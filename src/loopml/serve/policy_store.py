"""Endpoint traffic policies shared by every worker of a server, through the workspace.

With ``--workers N`` an admin request reaches one worker only. That worker writes the
policy to ``<home>/run/traffic-<model>.json`` (temp file, fsync, rename: a reader sees the
old file or the new one, never half of one) and every worker's poll loop re-reads the
file when its ``(mtime, inode)`` changed, so all of them apply the same policy within one
``poll_interval_s``. The file also survives a restart: a server starting on the workspace
applies the last policy set for each endpoint it serves.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from loopml.errors import InvalidTrafficPolicy
from loopml.serve.traffic import TrafficPolicy, parse_policy

log = logging.getLogger("loopml.serve")


def policy_path(home: str | os.PathLike, model: str) -> Path:
    return Path(home) / "run" / f"traffic-{model}.json"


def save_policy(home: str | os.PathLike, model: str, policy: TrafficPolicy) -> Path:
    """Write ``policy`` for ``model`` atomically; returns the file."""
    from loopml.fileio import atomic_write_json

    return atomic_write_json(policy_path(home, model), policy.to_dict())


def file_signature(path: Path) -> tuple[int, int] | None:
    """``(mtime_ns, inode)`` of the file, None when it does not exist (one ``stat``)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ino


def load_policy(path: Path) -> TrafficPolicy | None:
    """The policy in ``path``; None when missing or unreadable (logged, the current one stays)."""
    try:
        return parse_policy(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, InvalidTrafficPolicy) as e:
        log.warning("ignoring traffic policy file %s: %s", path, e)
        return None


class PolicyFiles:
    """Remembers the signature of each model's policy file; :meth:`changed` returns the
    policies whose file changed since the last look (first look: any existing file)."""

    def __init__(self, home: str | os.PathLike) -> None:
        self.home = Path(home)
        self._seen: dict[str, tuple[int, int] | None] = {}

    def changed(self, models: list[str]) -> dict[str, TrafficPolicy]:
        out = {}
        for model in models:
            path = policy_path(self.home, model)
            sig = file_signature(path)
            if model in self._seen and self._seen[model] == sig:
                continue
            self._seen[model] = sig
            if sig is not None:
                policy = load_policy(path)
                if policy is not None:
                    out[model] = policy
        return out

    def save(self, model: str, policy: TrafficPolicy) -> None:
        """Persist ``policy`` and remember the file as seen (this process applies it itself)."""
        path = save_policy(self.home, model, policy)
        self._seen[model] = file_signature(path)
