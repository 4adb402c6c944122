"""Write-then-publish storage on an fsspec URL (``s3://bucket/prefix`` or a local folder), the
building block for a ``LOOPML_HOME`` on object storage (#11).

Object stores have no rename and no multi-object transaction, so a snapshot (data + profile +
metadata) cannot appear "all at once" by moving a folder. Instead each publication writes its
files under a fresh version folder, ``<name>/v-<uuid>/<file>``, and then swaps one small
object, ``<name>/MANIFEST.json``, that names the version and each file's size and SHA-256. A
single PUT is atomic on S3 (a reader gets the old or the new object, never part of one; a
multipart upload appears only when completed), so a reader that starts from the manifest
sees a whole publication or the previous one: never a partial object, never a mix of two.
A crash before the manifest PUT leaves only an unreferenced version folder, which
:meth:`ObjectHome.collect` deletes. On a local folder the manifest is written to a temporary
name and renamed, which POSIX makes atomic too.

S3 endpoint and credentials come from the standard variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid

from loopml.errors import ObjectNotPublished

MANIFEST = "MANIFEST.json"


def storage_options(url: str) -> dict:
    """fsspec options for ``url`` from the standard AWS variables (s3:// only)."""
    if not url.startswith(("s3://", "s3a://")):
        return {}
    opts: dict = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    client: dict = {}
    if endpoint:
        client["endpoint_url"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        client["region_name"] = region
    if client:
        opts["client_kwargs"] = client
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        opts["key"] = os.environ["AWS_ACCESS_KEY_ID"]
        opts["secret"] = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    return opts


class ObjectHome:
    """Publications under one fsspec URL. The constructor only stores it; the file system is
    opened on first use."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._fs = None
        self._root = ""

    @property
    def fs(self):
        if self._fs is None:
            from fsspec.core import url_to_fs

            self._fs, self._root = url_to_fs(self.url, **storage_options(self.url))
            self._root = self._root.rstrip("/")
        return self._fs

    def _path(self, *parts: str) -> str:
        _ = self.fs  # resolves _root
        return "/".join([self._root, *parts])

    @property
    def _local(self) -> bool:
        return "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    # --- writing ---------------------------------------------------------------------------

    def publish(self, name: str, files: dict[str, bytes]) -> str:
        """Write ``files`` as one publication of ``name`` and make it visible at once; returns
        the version id. Readers see the previous publication until the manifest swap."""
        _check_name(name)
        version = f"v-{uuid.uuid4().hex}"
        entries = {}
        for fname, data in files.items():
            _check_name(fname)
            self._put(self._path(name, version, fname), data)
            entries[fname] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        manifest = json.dumps({"version": version, "files": entries}, sort_keys=True).encode()
        self._put(self._path(name, MANIFEST), manifest)  # the publication point
        return version

    def _put(self, path: str, data: bytes) -> None:
        """One object, whole or not at all: a single PUT on S3; temp file + rename locally."""
        if self._local:
            parent = path.rsplit("/", 1)[0]
            self.fs.makedirs(parent, exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)

    # --- reading ---------------------------------------------------------------------------

    def manifest(self, name: str) -> dict | None:
        _check_name(name)
        try:
            return json.loads(self.fs.cat_file(self._path(name, MANIFEST)))
        except FileNotFoundError:
            return None

    def published(self, name: str) -> bool:
        return self.manifest(name) is not None

    def read(self, name: str, fname: str | None = None) -> dict[str, bytes] | bytes:
        """The files of ``name``'s current publication (or one of them), checked against the
        manifest's sizes and checksums."""
        m = self.manifest(name)
        if m is None:
            raise ObjectNotPublished(f"{self.url}/{name}", "not published")
        wanted = [fname] if fname is not None else sorted(m["files"])
        out = {}
        for f in wanted:
            meta = m["files"].get(f)
            if meta is None:
                raise ObjectNotPublished(f"{self.url}/{name}/{f}", "no such file in the publication")
            data = self.fs.cat_file(self._path(name, m["version"], f))
            if len(data) != meta["size"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
                raise ObjectNotPublished(f"{self.url}/{name}/{f}", "content does not match its manifest")
            out[f] = data
        return out[fname] if fname is not None else out

    def names(self, prefix: str = "") -> list[str]:
        """Published names directly under ``prefix`` (unpublished folders are not listed)."""
        base = self._path(prefix) if prefix else self._root
        try:
            entries = self.fs.ls(base, detail=False)
        except FileNotFoundError:
            return []
        out = []
        for e in entries:
            name = (f"{prefix}/" if prefix else "") + e.rstrip("/").rsplit("/", 1)[-1]
            if self.fs.exists(self._path(name, MANIFEST)):
                out.append(name)
        return sorted(out)

    def collect(self, name: str) -> list[str]:
        """Delete version folders of ``name`` that the manifest does not name (left by crashed or
        superseded publications). Run it when no publication of ``name`` is in progress."""
        m = self.manifest(name)
        keep = m["version"] if m else None
        removed = []
        try:
            entries = self.fs.ls(self._path(name), detail=False)
        except FileNotFoundError:
            return []
        for e in entries:
            leaf = e.rstrip("/").rsplit("/", 1)[-1]
            if leaf.startswith("v-") and leaf != keep:
                self.fs.rm(self._path(name, leaf), recursive=True)
                removed.append(leaf)
        return removed


def _check_name(name: str) -> None:
    parts = name.split("/")
    if not name or any(p in ("", ".", "..") or p.startswith("v-") or p == MANIFEST for p in parts):
        raise ValueError(f"object name {name!r}: use '/'-separated parts, none empty, '.', '..', "
                         f"'v-*' or {MANIFEST!r}")
