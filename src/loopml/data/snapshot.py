"""Immutable dataset snapshots, named by a hash of their content.

A snapshot is a folder ``<workspace>/snapshots/<id>/`` holding ``data.parquet``,
``meta.json`` (id, source, row count, schema, creation time) and the reference
profile (``profile.json``, ``profile_values.npz``). The id is ``ds-`` plus the
first 16 hex digits of a SHA-256 over the column names, dtypes and per-column
value hashes, so the same content always gives the same id whatever the file's
path, name, mtime or format (CSV or Parquet). Snapshots are written into a
temporary folder, fsynced, then renamed into place; an id that already exists is
reused, never rewritten. With ``LOOPML_DATA_URI`` set to an object store (``s3://...``) the
folder's files are also published there as one publication (see :mod:`loopml.data.remote`),
and the local folder becomes a cache of what this machine has read or written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loopml.config import Workspace
from loopml.data.profile import ReferenceProfile, build_profile
from loopml.data.source import read_table
from loopml.errors import DataSourceError, SnapshotNotFound

DATA_FILE = "data.parquet"
META_FILE = "meta.json"
ID_PREFIX = "ds-"


@dataclass(frozen=True)
class Snapshot:
    """One stored snapshot. Constructing it does no I/O; the ``load_*`` methods do."""

    id: str
    path: Path
    source: str
    row_count: int
    schema: dict[str, str]
    created_at: str
    # LOOPML_DATA_URI when the snapshot was listed from object storage and may not be in the
    # local cache yet: the first read of its files fetches the publication.
    remote: str | None = field(default=None, compare=False, repr=False)

    @property
    def data_path(self) -> Path:
        self._fetch()
        return self.path / DATA_FILE

    def _fetch(self) -> None:
        if self.remote and not (self.path / META_FILE).exists():
            from loopml.data import remote

            remote.materialize(remote.store(self.remote), self.id, self.path.parent)

    @property
    def columns(self) -> list[str]:
        return list(self.schema)

    def load_frame(self) -> pd.DataFrame:
        """The snapshot's table, read from its Parquet file."""
        return pd.read_parquet(self.data_path)

    def load_profile(self) -> ReferenceProfile:
        """The reference profile computed when the snapshot was taken."""
        self._fetch()
        return ReferenceProfile.load(self.path)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("remote")
        d["path"] = str(self.path)
        return d


def content_id(df: pd.DataFrame) -> str:
    """``ds-`` + 16 hex digits of SHA-256 over column names, dtypes and values (index ignored)."""
    digest = hashlib.sha256()
    digest.update(f"rows={len(df)};cols={df.shape[1]}\n".encode())
    for name in df.columns:
        series = df[name]
        digest.update(f"{name!s}\x1f{series.dtype!s}\x1e".encode())
        digest.update(_column_hash(series).tobytes())
    return ID_PREFIX + digest.hexdigest()[:16]


def _column_hash(series: pd.Series) -> np.ndarray:
    try:
        return pd.util.hash_pandas_object(series, index=False).to_numpy()
    except TypeError:  # unhashable cells (lists, dicts): hash their text form
        return pd.util.hash_pandas_object(series.astype(str), index=False).to_numpy()


def snapshot_dataset(
    source: str,
    workspace: Workspace,
    *,
    base_dir: Path | None = None,
    df: pd.DataFrame | None = None,
) -> Snapshot:
    """Store a table as an immutable snapshot and return it.

    Reads ``source`` with :func:`~loopml.data.source.read_table` (relative to
    ``base_dir``), unless ``df`` is given, in which case ``source`` is only
    recorded. If a snapshot with the same content already exists it is returned
    unchanged (with its original ``source`` and ``created_at``).
    """
    if df is None:
        df = read_table(source, base_dir=base_dir)
    df = _with_string_names(df, source)
    snap_id = content_id(df)
    root = workspace.snapshots
    root.mkdir(parents=True, exist_ok=True)
    final = root / snap_id
    home = None
    if workspace.data_remote:
        from loopml.data import remote

        home = remote.store(workspace.data_uri)
        # The store is the truth; the local folder only caches what it holds.
        if remote.published(home, snap_id):
            return load_snapshot(snap_id, workspace)
    elif (final / META_FILE).exists():
        return load_snapshot(snap_id, workspace)

    tmp = Path(tempfile.mkdtemp(prefix=f".{snap_id}.", suffix=".tmp", dir=root))
    try:
        snap = Snapshot(
            id=snap_id,
            path=final,
            source=source,
            row_count=int(len(df)),
            schema={str(c): str(t) for c, t in df.dtypes.items()},
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        _write_parquet(df, tmp / DATA_FILE, source)
        build_profile(df).save(tmp)
        meta = {k: v for k, v in snap.to_dict().items() if k != "path"}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        _fsync_tree(tmp)
        if home is not None:
            remote.publish(home, snap_id, tmp)  # the publication point for every machine
            if (final / META_FILE).exists():  # cached already (same content): keep that copy
                shutil.rmtree(tmp, ignore_errors=True)
                return load_snapshot(snap_id, workspace)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process stored the same content first: theirs is identical, keep it.
            if not (final / META_FILE).exists():
                raise DataSourceError(str(final), "folder exists but is not a complete snapshot; delete it and snapshot again") from None
            shutil.rmtree(tmp, ignore_errors=True)
            return load_snapshot(snap_id, workspace)
        _fsync_dir(root)
        return snap
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_snapshot(snapshot_id: str, workspace: Workspace) -> Snapshot:
    """A stored snapshot by id (or a unique prefix of one); raises :class:`SnapshotNotFound`."""
    root = workspace.snapshots
    if not snapshot_id or "/" in snapshot_id or "\\" in snapshot_id or snapshot_id.startswith("."):
        raise SnapshotNotFound(snapshot_id)
    folder = root / snapshot_id
    if workspace.data_remote and not (folder / META_FILE).exists():
        return _load_remote(snapshot_id, workspace)
    if not (folder / META_FILE).exists():
        matches = [p for p in _snapshot_dirs(root) if p.name.startswith(snapshot_id)]
        if len(matches) != 1:
            raise SnapshotNotFound(snapshot_id)
        folder = matches[0]
    return _read_meta(folder)


def list_snapshots(workspace: Workspace) -> list[Snapshot]:
    """Every stored snapshot, oldest first."""
    if workspace.data_remote:
        from loopml.data import remote

        home = remote.store(workspace.data_uri)
        snaps = [_parse_meta(remote.read_meta(home, i), workspace.snapshots / i, workspace.data_uri)
                 for i in remote.ids(home)]
        return sorted(snaps, key=lambda s: (s.created_at, s.id))
    snaps = [_read_meta(p) for p in _snapshot_dirs(workspace.snapshots)]
    return sorted(snaps, key=lambda s: (s.created_at, s.id))


def _load_remote(snapshot_id: str, workspace: Workspace) -> Snapshot:
    """A published snapshot by id or unique prefix, fetched into the local cache."""
    from loopml.data import remote

    home = remote.store(workspace.data_uri)
    if not remote.published(home, snapshot_id):
        matches = [i for i in remote.ids(home) if i.startswith(snapshot_id)]
        if len(matches) != 1:
            raise SnapshotNotFound(snapshot_id)
        snapshot_id = matches[0]
        if (workspace.snapshots / snapshot_id / META_FILE).exists():
            return _read_meta(workspace.snapshots / snapshot_id)
    return _read_meta(remote.materialize(home, snapshot_id, workspace.snapshots))


def _snapshot_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if not p.name.startswith(".") and (p / META_FILE).exists()]


def _read_meta(folder: Path) -> Snapshot:
    try:
        return _parse_meta((folder / META_FILE).read_bytes(), folder)
    except OSError as exc:
        raise DataSourceError(str(folder / META_FILE), f"snapshot metadata is unreadable ({exc}); delete the folder and snapshot again") from None


def _parse_meta(raw: bytes, folder: Path, remote: str | None = None) -> Snapshot:
    try:
        meta = json.loads(raw)
        return Snapshot(
            id=meta["id"],
            path=folder,
            source=meta["source"],
            row_count=int(meta["row_count"]),
            schema=dict(meta["schema"]),
            created_at=meta["created_at"],
            remote=remote,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise DataSourceError(str(folder / META_FILE), f"snapshot metadata is unreadable ({exc}); delete the folder and snapshot again") from None


def _with_string_names(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Parquet needs unique string column names; an index carries nothing we keep."""
    names = [str(c) for c in df.columns]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataSourceError(source, f"duplicate column names {dupes}; rename them so each is unique")
    if all(isinstance(c, str) for c in df.columns) and isinstance(df.index, pd.RangeIndex) and df.index.start == 0 and df.index.step == 1:
        return df
    out = df.reset_index(drop=True)
    out.columns = names
    return out


def _write_parquet(df: pd.DataFrame, path: Path, source: str) -> None:
    try:
        df.to_parquet(path, index=False)
    except Exception as exc:  # pyarrow: mixed-type object columns and the like
        raise DataSourceError(source, f"cannot store as Parquet ({str(exc).splitlines()[0][:200]}); give each column one type") from None


def _fsync_tree(folder: Path) -> None:
    for p in folder.iterdir():
        with open(p, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # directories cannot be opened on some platforms (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
