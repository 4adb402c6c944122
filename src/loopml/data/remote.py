"""Snapshots on object storage (``LOOPML_DATA_URI=s3://bucket/prefix``, issue #11).

Each snapshot id is one name in an :class:`~loopml.platform.objstore.ObjectHome`: its data,
reference profile and metadata are written as ONE publication, so a reader on any machine sees
the whole snapshot or none of it. The workspace's local ``snapshots`` folder stays as a read
cache: a snapshot is content-named and immutable, so a copy fetched once never goes stale, and
everything downstream (training, the registry's reference profile) keeps reading local files.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from loopml.errors import DataStoreUnavailable, LoopmlError
from loopml.platform.objstore import ObjectHome

META_FILE = "meta.json"


@contextlib.contextmanager
def reachable(uri: str, error: type[DataStoreUnavailable] = DataStoreUnavailable) -> Iterator[None]:
    """Turn a store that cannot be reached (connection refused, bad credentials, missing bucket)
    into :class:`DataStoreUnavailable` (or ``error``, naming the setting): fail closed, never
    "no snapshots"."""
    try:
        yield
    except (LoopmlError, FileNotFoundError, ValueError):
        raise
    except Exception as exc:  # botocore / aiohttp / OSError: all mean "the store is not usable"
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise error(uri, f"cannot reach the object store ({type(exc).__name__}: {first})") from None


def store(uri: str) -> ObjectHome:
    return ObjectHome(uri)


def check_reachable(home: ObjectHome, error: type[DataStoreUnavailable] = DataStoreUnavailable) -> None:
    """List the store's root once: a missing bucket or an unreachable endpoint raises here instead
    of looking like an empty store (fsspec reports a missing bucket as FileNotFoundError)."""
    with reachable(home.url, error):
        if home._local:  # noqa: SLF001 - a local folder: a missing one is simply empty
            return
        bucket = home._path().split("/", 1)[0]  # noqa: SLF001 - the resolved "bucket/prefix"
        try:
            home.fs.ls(bucket, detail=False, refresh=True)
        except FileNotFoundError:
            raise error(home.url, f"bucket '{bucket}' does not exist") from None


def publish(home: ObjectHome, snap_id: str, folder: Path) -> None:
    """Publish every file of a finished local snapshot folder as one publication."""
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
    with reachable(home.url):
        home.publish(snap_id, files)


def published(home: ObjectHome, snap_id: str) -> bool:
    with reachable(home.url):
        return home.published(snap_id)


def ids(home: ObjectHome) -> list[str]:
    """Ids of every published snapshot (unfinished publications are not listed)."""
    check_reachable(home)
    with reachable(home.url):
        return home.names()


def read_meta(home: ObjectHome, snap_id: str) -> bytes:
    with reachable(home.url):
        return home.read(snap_id, META_FILE)


def materialize(home: ObjectHome, snap_id: str, root: Path) -> Path:
    """Copy a published snapshot into the local cache ``root/<id>`` (temp folder + rename, like a
    local snapshot) and return that folder; an existing copy is kept."""
    final = root / snap_id
    if (final / META_FILE).exists():
        return final
    with reachable(home.url):
        files = home.read(snap_id)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{snap_id}.", suffix=".tmp", dir=root))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        try:
            tmp.rename(final)
        except OSError:  # another process cached it first: same content, keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
