"""A FAKE Kubernetes API server for the operator tests: kmock's in-memory emulator plus the
parts of the real API server that Kopf depends on. It is not Kubernetes.

kmock 0.8's ``KubernetesEmulator`` stores objects, merges patches and streams watch events,
but it stamps no ``uid``/``creationTimestamp``/``resourceVersion``, applies a JSON patch as
if it were a merge patch, and has no ``generation``. Kopf removes its finalizer with a JSON
patch whose first op tests ``/metadata/resourceVersion`` and waits for the watch event of the
version it wrote, so without these Kopf loops or acts on stale bodies. :class:`FakeApiServer`
adds, on every write:

- create: ``uid``, ``creationTimestamp``, ``generation`` 1, a fresh ``resourceVersion``,
  ``generateName`` expansion (Kopf posts Events that way), 409 when the name exists;
- patch (merge, strategic, apply and JSON patch): the new body is computed here; a failed
  JSON-patch ``test`` answers 422 and a stale ``metadata.resourceVersion`` in a merge patch
  409, as the real server; ``generation`` moves when anything but metadata/status changed;
  the ``status`` subresource changes status only, the main resource ignores status (as for
  a CRD with the status subresource); a patch that changes nothing writes nothing;
- delete of an object with finalizers: ``deletionTimestamp`` with a new ``resourceVersion``;
- lists carry the resourceVersion of the listed state, and a watch from a resourceVersion
  replays only what changed since (kmock replays every object, handing Kopf stale bodies);
  ``/api/v1/namespaces``, which kmock 0.8 cannot route, is listed and watched;
- CRs are validated against their CRD's openAPIV3Schema when a validator is registered
  (422 with the first error);
- once an object is gone, the objects its ``uid`` owns (``ownerReferences``) are deleted too,
  as the garbage collector does with background propagation.

``FakeCluster`` runs it on 127.0.0.1 in a thread of its own and writes a kubeconfig naming
it, so Kopf and the operator's client log in explicitly (never through ~/.kube).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import json
import secrets
import threading
import uuid
from pathlib import Path
from typing import Any, Callable

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal.k8s import KubernetesObjectNotFoundError, KubernetesResourceNotFoundError

CREATE, UPDATE, DELETE = kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE


def _merge(base: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(base) if isinstance(base, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


def _diff(old: dict, new: dict) -> dict:
    """The merge patch turning ``old`` into ``new`` (what kmock's own store then applies)."""
    out: dict[str, Any] = {k: None for k in old if k not in new}
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(old.get(k), dict):
            d = _diff(old[k], v)
            if d:
                out[k] = d
        elif k not in old or old[k] != v:
            out[k] = v
    return out


def _spec_part(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeApiError(kmock.KubernetesError):
    pass


@attrs.define(kw_only=True)
class FakeApiServer(kmock.KubernetesEmulator):
    """The fake API server (see the module docstring for what it adds to kmock)."""

    validators: dict[str, Callable[[dict], str | None]] = attrs.field(factory=dict)  # plural -> error or None
    _versions: Any = attrs.field(factory=lambda: itertools.count(1000), init=False)
    _last_version: int = attrs.field(default=999, init=False)
    _write_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)

    namespaces: list[str] = attrs.field(factory=list)  # what GET /api/v1/namespaces lists

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock 0.8 parses /api/v1/namespaces as the prefix of a namespaced path and answers
        # 500; Kopf lists and watches exactly that path, so it is answered here
        if raw_request.path.rstrip("/") == "/api/v1/namespaces" and raw_request.method == "GET":
            if raw_request.query.get("watch") != "true":
                return aiohttp.web.json_response({
                    "apiVersion": "v1", "kind": "NamespaceList", "metadata": {"resourceVersion": self._next_version()},
                    "items": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in self.namespaces]})
            stream = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
            await stream.prepare(raw_request)
            try:  # no namespace comes or goes in a test: an open, quiet stream until the client leaves
                await asyncio.Event().wait()
            finally:
                return stream
        return await super().__call__(raw_request)

    def declare(self, group_version: str, plural: str, kind: str, namespaced: bool = True,
                status: bool = False) -> None:
        """Serve ``plural`` in discovery (Kopf looks resources up there before watching)."""
        group, _, version = group_version.rpartition("/")
        self.resources[f"{group}/{version}/{plural}" if group else f"v1/{plural}"] = kmock.ResourceInfo(
            kind=kind, singular=kind.lower(), namespaced=namespaced,
            subresources={"status"} if status else set(),
            verbs={"list", "watch", "get", "create", "patch", "update", "delete"})

    def _has_status(self, resource: Any) -> bool:
        for r in self.resources:
            if r == resource:
                return "status" in set(self.resources[r].subresources)
        return False

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.resource is None or request.action not in (CREATE, UPDATE, DELETE):
            return await super()._handle(request)
        # one write at a time: the new body is computed from the current one, then stored
        async with self._write_lock:
            if request.action == CREATE:
                request = self._stamp_create(request)
            elif request.action == UPDATE:
                stamped = self._stamp_patch(request)
                if isinstance(stamped, aiohttp.web.StreamResponse):
                    return stamped
                request = stamped
            elif request.name is not None:
                await self._soft_delete(request)
            key = (request.resource, request.namespace, request.name)
            uid = self.objects[key].raw["metadata"].get("uid") if request.name and key in self.objects \
                and not self.objects[key].deleted else None
            response = await super()._handle(request)
            if uid and self.objects[key].deleted:
                await self._collect_garbage(uid)
            return response

    async def _collect_garbage(self, uid: str) -> None:
        """The garbage collector's part: objects owned by a deleted one go too (background
        propagation), and what they own in turn."""
        async with self._lock:
            owned = [(res, o.raw) for (res, _, _), o in self.objects.items() if not o.deleted
                     and any(r.get("uid") == uid for r in o.raw.get("metadata", {}).get("ownerReferences") or ())]
            for res, raw in owned:
                meta = raw["metadata"]
                self.objects[res, meta.get("namespace"), meta["name"]].delete()
                await self._buses[res].put({"type": "DELETED", "object": raw})
        for _, raw in owned:
            await self._collect_garbage(raw["metadata"]["uid"])

    def _evolve(self, request: kmock.Request, data: Any) -> kmock.Request:
        """The request with a new body; kmock's reactions see only the requests it logged
        (``request in payload._source`` filters its log), so the logged one is swapped too."""
        new = attrs.evolve(request, data=data)
        for i in range(len(self._requests) - 1, -1, -1):
            if self._requests[i] is request:
                self._requests[i] = new
                break
        return new

    def _next_version(self) -> str:
        self._last_version = next(self._versions)
        return str(self._last_version)

    def _selected(self, request: kmock.Request) -> list[dict]:
        return [o.raw for (res, ns, name), o in self.objects.items()
                if res == request.resource and not o.deleted
                and (request.namespace is None or ns == request.namespace)
                and (request.name is None or name == request.name)]

    async def _serve_list(self, request: kmock.Request) -> Any:
        """kmock's list, with the resourceVersion of the listed state (not "...")."""
        if request.resource not in self._get_resources():
            raise KubernetesResourceNotFoundError()
        async with self._lock:
            return {"metadata": {"resourceVersion": str(self._last_version)}, "items": self._selected(request)}

    async def _serve_watch(self, request: kmock.Request) -> Any:
        """A watch from the listed ``resourceVersion``: only objects changed since then are
        replayed, then every later event. kmock replays every object as ADDED, which hands
        Kopf stale bodies right after its own patches: its resourceVersion-guarded finalizer
        patch then fails with 422 and, no newer event coming, the object is never handled."""
        yield b""
        since = request.params.get("resourceVersion", "")
        since_v = int(since) if since.isdigit() else -1
        bus = self._buses[request.resource]
        async with self._lock:  # no write between the snapshot and the mark
            mark = await bus.mark()
            replay = [o for o in self._selected(request) if int(o["metadata"].get("resourceVersion", 0)) > since_v]
        for obj in replay:
            yield {"type": "ADDED", "object": obj}
        async for event in bus.stream(since=mark):
            meta = event.get("object", {}).get("metadata", {})
            if ((request.namespace is None or meta.get("namespace") == request.namespace)
                    and (request.name is None or meta.get("name") == request.name)):
                yield event

    def _validate(self, request: kmock.Request, obj: dict) -> None:
        check = self.validators.get(request.resource.plural) if request.resource else None
        error = check(obj) if check else None
        if error:
            raise FakeApiError(status=422, reason="Invalid", message=error)

    def _stamp_create(self, request: kmock.Request) -> kmock.Request:
        obj = copy.deepcopy(request.data) if isinstance(request.data, dict) else None
        if obj is None:
            raise FakeApiError(status=400, reason="BadRequest", message="the body must be a JSON object")
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise FakeApiError(status=422, reason="Invalid", message="metadata.name or generateName is required")
            meta["name"] = meta["generateName"] + secrets.token_hex(3)
        if request.namespace:
            meta["namespace"] = request.namespace
        if self._has_status(request.resource):
            obj.pop("status", None)  # the status subresource is written through /status only
        self._validate(request, obj)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), resourceVersion=self._next_version(),
                    generation=1)
        return self._evolve(request, obj)

    def _stamp_patch(self, request: kmock.Request) -> kmock.Request | aiohttp.web.StreamResponse:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            raise KubernetesObjectNotFoundError()
        current = copy.deepcopy(self.objects[key].raw)
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            body = json.loads(request.body or b"null")
        except ValueError:
            raise FakeApiError(status=400, reason="BadRequest", message="the patch is not JSON") from None
        if ctype == "application/json-patch+json":
            try:
                new = jsonpatch.apply_patch(current, body)
            except jsonpatch.JsonPatchTestFailed as e:  # Kopf's resourceVersion guard
                raise FakeApiError(status=422, reason="Invalid", message=f"the test of the JSON patch failed: {e}")
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                raise FakeApiError(status=422, reason="Invalid", message=str(e)) from None
        else:
            want = (body or {}).get("metadata", {}).get("resourceVersion") if isinstance(body, dict) else None
            if want and want != current["metadata"].get("resourceVersion"):
                raise FakeApiError(status=409, reason="Conflict",
                                   message="the object has been modified; apply your changes to the latest version")
            new = _merge(current, body)
        new = copy.deepcopy(new)  # _merge shares untouched branches with ``current``
        if request.subresource == "status":
            new = {**copy.deepcopy(current), "status": new.get("status")}
            if new["status"] is None:
                new.pop("status")
        elif self._has_status(request.resource):
            new = {k: v for k, v in new.items() if k != "status"}
            if "status" in current:
                new["status"] = current["status"]
        new["metadata"].update({k: current["metadata"][k] for k in ("uid", "creationTimestamp", "generation")
                                if k in current["metadata"]})
        new["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
        if new == current:  # a no-op writes nothing and sends no event, as the real server
            return aiohttp.web.json_response(current)
        self._validate(request, new)
        if _spec_part(new) != _spec_part(current):
            new["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
        new["metadata"]["resourceVersion"] = self._next_version()
        return self._evolve(request, _diff(current, new))

    async def _soft_delete(self, request: kmock.Request) -> None:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return  # kmock answers 404
        meta = self.objects[key].get("metadata", {})
        if meta.get("finalizers") and not meta.get("deletionTimestamp"):
            async with self._lock:
                self.objects[key].patch({"metadata": {"deletionTimestamp": _now(),
                                                      "resourceVersion": self._next_version()}})
                await self._buses[request.resource].put({"type": "MODIFIED", "object": self.objects[key].raw})


class FakeCluster:
    """The fake API server on 127.0.0.1 (a free port) in a background thread with its own
    event loop; ``kubeconfig`` is a file naming it (token auth, plain HTTP)."""

    def __init__(self, folder: Path, configure: Callable[[FakeApiServer], None]) -> None:
        self.folder = Path(folder)
        self.configure = configure
        self.kubeconfig = self.folder / "kubeconfig"
        self.api: FakeApiServer | None = None
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "FakeCluster":
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            try:
                self._stop = asyncio.Event()
                async with FakeApiServer() as api, kmock.Server(api, host="127.0.0.1") as srv:
                    self.configure(api)
                    self.api, self.url = api, str(srv.url).rstrip("/")
                    ready.set()
                    await self._stop.wait()
            except BaseException as e:  # surfaced to start()
                failure.append(e)
                ready.set()

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(serve())

        self._thread = threading.Thread(target=main, name="fake-apiserver", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure or not self.url:
            raise RuntimeError(f"the fake API server did not start: {failure}")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}]}))
        return self

    def call(self, fn: Callable[[FakeApiServer], Any]) -> Any:
        """Run ``fn(api)`` on the server's loop (reading kmock's store from its own thread)."""
        async def go() -> Any:
            return fn(self.api)
        return asyncio.run_coroutine_threadsafe(go(), self._loop).result(10)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread:
            self._thread.join(10)
