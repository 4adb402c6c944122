"""The ASGI application: OIP v2 + MLflow scoring + admin + metrics, as one raw ASGI callable.

The hot path (``POST /v2/models/{m}/infer`` and ``POST /invocations``) is plain ASGI:
read the body, parse it with orjson, decode rows, route to a deployment, await its
batcher, answer. The body is decoded against the signature of the deployment that predicts
on it: a canary or shadow challenger with other features than the champion gets its own
columns, so a request carrying both feature sets succeeds for both (a request without the
challenger's extra feature is a challenger error, not a champion one). Every model response carries ``x-loopml-model``,
``x-loopml-model-version``, ``x-loopml-variant`` and ``x-request-id``. Every error is
``{"error": "..."}`` with the status of its :class:`~loopml.errors.LoopmlError`.

Under load (issue #9): each model admits at most ``max_inflight`` requests at once
(:mod:`.admission`); the next one is answered 503 + ``Retry-After`` before its body is read.
Every request has a deadline (``x-loopml-deadline-ms``, else ``deadline_ms``; 504 past it),
and one whose client has disconnected is dropped before it is predicted.

Use :func:`build_app` to make one; the models load during ASGI lifespan startup.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sys
import time
from importlib import metadata
from typing import Any

import loopml
from loopml.config import Workspace
from loopml.errors import (BadRequest, ClientGone, DeadlineExceeded, LoopmlError, MethodNotAllowed, ModelNotFound,
                           NotAuthorized, Overloaded, RouteNotFound, UnsupportedMediaType)
from loopml.serve import admin, auth, openapi
from loopml.serve.admission import CLIENT_GONE, DEADLINE, Admission
from loopml.serve.fleet import Fleet
from loopml.serve.http import CLIENT_GONE_EXTENSION as GONE_EXTENSION
from loopml.serve.http import JSON, TEXT, dumps, header_dict, loads, read_body, respond
from loopml.serve.metrics import CONTENT_TYPE as METRICS_TYPE
from loopml.serve.metrics import ServeMetrics
from loopml.serve.placement import PlacementCollector
from loopml.serve.protocols import mlflow as mlflow_proto
from loopml.serve.protocols import oip_v2
from loopml.serve.settings import EndpointSpec, ServeSettings

log = logging.getLogger("loopml.serve")
DEADLINE_HEADER = "x-loopml-deadline-ms"
MODEL_HEADER = "x-loopml-model"

_LIVE = dumps({"live": True})
_READY = dumps({"ready": True})
_NOT_READY = dumps({"ready": False})


class ServeApp:
    """ASGI callable; state lives in ``fleet`` (models) and ``metrics``."""

    def __init__(self, fleet: Fleet, settings: ServeSettings, metrics: ServeMetrics) -> None:
        self.fleet = fleet
        self.settings = settings
        self.metrics = metrics
        self.admission = Admission(settings.max_inflight)
        metrics.fleet = fleet
        metrics.admission = self.admission
        metrics.registry.register(PlacementCollector(fleet))  # where each version predicts
        self._shadow_tasks: set[asyncio.Task] = set()
        self.tracing: Any = None  # set by loopml.serve.tracing.maybe_trace when OTel is configured
        try:
            self._mlflow_version = metadata.version("mlflow").encode()
        except metadata.PackageNotFoundError:
            self._mlflow_version = loopml.__version__.encode()

    async def __call__(self, scope: dict, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    # -- lifespan -----------------------------------------------------------------------------

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.fleet.start()
                except Exception as e:  # noqa: BLE001 - report, uvicorn exits
                    self.fleet.startup_error = e
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                if self.settings.tune_gc:
                    import gc

                    gc.collect()
                    gc.freeze()  # loaded models never need scanning again
                    gc.set_threshold(50_000, 50, 100)
                    # background threads (prediction log) hand the GIL back sooner: steadier p99
                    sys.setswitchinterval(0.0005)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._shadow_tasks:
                    await asyncio.gather(*self._shadow_tasks, return_exceptions=True)
                await self.fleet.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- http ---------------------------------------------------------------------------------

    async def _http(self, scope: dict, receive, send) -> None:
        t0 = time.perf_counter()
        m = self.metrics
        m.inflight += 1
        labels = ["", "", ""]
        extra: list[tuple[bytes, bytes]] | None = None
        try:
            status, body, ctype, extra = await self._dispatch(scope, receive, labels)
        except LoopmlError as e:
            status, body, ctype = e.http_status, dumps({"error": str(e)}), JSON
            if isinstance(e, Overloaded):
                extra = [(b"retry-after", str(e.retry_after).encode())]
            elif isinstance(e, MethodNotAllowed):
                extra = [(b"allow", _allowed_methods(scope["path"]).encode())]
            elif isinstance(e, NotAuthorized):
                extra = [(b"www-authenticate", b'Bearer realm="loopml"')]
        except Exception as e:  # noqa: BLE001 - never a dead worker; log and answer
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            status, body, ctype = 500, dumps({"error": f"internal error: {type(e).__name__}"}), JSON
        try:
            await respond(send, status, body, ctype, extra)
        finally:
            m.inflight -= 1
            if labels[0]:
                m.observe(labels[0], labels[1], labels[2], status, time.perf_counter() - t0)

    async def _dispatch(self, scope: dict, receive, labels: list[str]):
        method: str = scope["method"]
        path: str = scope["path"]
        if path.startswith("/v2/models/"):
            parts = path[11:].split("/")
            return await self._v2_model(scope, receive, method, path, parts, labels)
        if path == "/invocations":
            _require(method, "POST", path)
            return await self._invocations(scope, receive, labels)
        simple = _SIMPLE_ROUTES.get(path)
        if simple is not None:
            _require(method, "GET", path)
            return simple(self)
        if path.startswith("/admin/") or path == "/admin":
            return await self._admin(scope, receive, method, path)
        raise RouteNotFound(method, path)

    # -- OIP v2 -------------------------------------------------------------------------------

    async def _v2_model(self, scope, receive, method, path, parts, labels):
        name = parts[0]
        version = None
        rest = parts[1:]
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        if len(rest) > 1 or (rest and rest[0] not in ("ready", "infer")) or not name:
            raise RouteNotFound(method, path)
        ep = self.fleet.endpoints.get(name)
        if ep is None:
            raise ModelNotFound(name)
        action = rest[0] if rest else "metadata"
        if action == "infer":
            _require(method, "POST", path)
            return await self._oip_infer(scope, receive, ep, version, labels)
        _require(method, "GET", path)
        dep = self._pick_version(ep, version) if version is not None else ep.primary
        if action == "ready":
            ready = dep is not None
            return (200 if ready else 503), dumps({"name": name, "ready": ready}), JSON, None
        if dep is None:
            raise ModelNotFound(name)
        versions = [d.version for d in ep.deployments()] if version is None else [dep.version]
        meta = oip_v2.model_metadata(dep.runtime, versions)
        meta["parameters"]["predict_in_thread"] = dep.in_thread  # serving.predict_in_thread, as decided
        return 200, dumps(meta), JSON, None

    def _pick_version(self, ep, version: str):
        dep = ep.by_version(version)
        if dep is None:
            raise ModelNotFound(ep.name, version)
        return dep

    async def _oip_infer(self, scope, receive, ep, version, labels):
        headers = header_dict(scope)
        labels[0] = ep.name
        if ep.primary is not None:
            labels[1], labels[2] = ep.primary.version, ep.primary.label
        auth.check_inference(self.settings.inference_token, headers)
        ctype = headers.get("content-type", "")
        if ctype and "json" not in ctype:
            raise UnsupportedMediaType(ctype, "application/json")

        async def payload():
            return loads(await read_body(receive, headers, self.settings.max_body_bytes))

        body, dep, rid = await self.oip_infer(ep, version, headers, labels, payload, _gone_probe(scope, receive))
        return 200, dumps(body), JSON, _model_headers(ep.name, dep, rid)

    async def oip_infer(self, ep, version, headers, labels, payload, gone=None):
        """OIP v2 inference, the core that REST and gRPC (:mod:`loopml.serve.grpc`) share:
        admission (before ``await payload()`` reads the request), deadline, decoding against
        the routed deployment's signature, traffic policy, batching and prediction log (the
        deployment), shadowing. Returns the response body as a dict (``oip_v2.encode_infer``),
        the deployment that answered and the request id; ``labels`` gets (model, version,
        variant) for the caller's metrics. Authentication is the caller's."""
        labels[0] = ep.name
        if ep.primary is not None:
            labels[1], labels[2] = ep.primary.version, ep.primary.label
        return await self._admitted(ep, self._oip_admitted(ep, version, labels, headers, payload, gone))

    async def _admitted(self, ep, work):
        """Run ``work`` (a coroutine that has not started, so nothing is read yet) inside the
        model's admission bound: a refusal costs next to nothing; drops are counted by cause."""
        try:
            self.admission.enter(ep.name)
        except BaseException:
            work.close()  # never awaited: say so, no "never awaited" warning
            raise
        try:
            return await work
        except (ClientGone, DeadlineExceeded) as e:
            self.admission.count(ep.name, CLIENT_GONE if isinstance(e, ClientGone) else DEADLINE)
            raise
        finally:
            self.admission.leave(ep.name)

    async def _oip_admitted(self, ep, version, labels, headers, read_payload, gone):
        deadline = self._deadline(headers)
        payload = await read_payload()
        if version is not None:
            dep, shadow = self._pick_version(ep, version), None
            req = oip_v2.decode_infer(payload, dep.runtime, self.settings.max_rows)
        else:
            key = ep.policy.key_column
            primary = ep.primary
            if primary is None:
                ep.route(headers, None)  # raises ModelNotReady
            req = oip_v2.decode_infer(_oip_payload_for(payload, primary, ep), primary.runtime,
                                      self.settings.max_rows, key)
            dep, shadow = ep.route(headers, req.first_row)
            if dep is not primary and dep.runtime.inputs != primary.runtime.inputs:
                req = oip_v2.decode_infer(_oip_payload_for(payload, dep, ep), dep.runtime, self.settings.max_rows, key)
        labels[0], labels[1], labels[2] = ep.name, dep.version, dep.label
        rid = self._request_id(req.id or headers.get("x-request-id"))
        req.rows.ids = _row_ids(rid, req.rows.n)
        pred = await (dep.predict(req.rows, deadline, gone) if self.tracing is None
                      else self.tracing.predict(dep, req.rows, deadline, rid))
        if shadow is not None:
            if shadow.runtime.inputs == dep.runtime.inputs:
                self._shadow(shadow, req.rows)
            else:  # decoded for the shadow's own signature, off the critical path
                max_rows = self.settings.max_rows
                self._shadow(shadow, None, lambda: oip_v2.decode_infer(
                    _oip_payload_for(payload, shadow, ep), shadow.runtime, max_rows).rows, rid)
        return oip_v2.encode_infer(req, pred, dep.runtime, rid), dep, rid

    # -- MLflow scoring -----------------------------------------------------------------------

    async def _invocations(self, scope, receive, labels):
        headers = header_dict(scope)
        auth.check_inference(self.settings.inference_token, headers)
        ep = self._default_endpoint(scope, headers)
        primary = ep.primary
        labels[0] = ep.name
        if primary is None:
            ep.route(headers, None)  # raises ModelNotReady
        labels[1], labels[2] = primary.version, primary.label
        return await self._admitted(ep, self._invocations_admitted(scope, receive, ep, primary, labels, headers))

    async def _invocations_admitted(self, scope, receive, ep, primary, labels, headers):
        deadline = self._deadline(headers)
        body = await read_body(receive, headers, self.settings.max_body_bytes)
        ctype = headers.get("content-type", "application/json")
        key = ep.policy.key_column
        rows, first = mlflow_proto.decode(body, ctype, primary.runtime, self.settings.max_rows, key)
        dep, shadow = ep.route(headers, first)
        if dep is not primary and dep.runtime.inputs != primary.runtime.inputs:
            rows, _ = mlflow_proto.decode(body, ctype, dep.runtime, self.settings.max_rows)
        labels[0], labels[1], labels[2] = ep.name, dep.version, dep.label
        rid = self._request_id(headers.get("x-request-id"))
        rows.ids = _row_ids(rid, rows.n)
        gone = _gone_probe(scope, receive)
        pred = await (dep.predict(rows, deadline, gone) if self.tracing is None
                      else self.tracing.predict(dep, rows, deadline, rid))
        if shadow is not None:
            if shadow.runtime.inputs == dep.runtime.inputs:
                self._shadow(shadow, rows)
            else:  # decoded for the shadow's own signature, off the critical path
                max_rows = self.settings.max_rows
                self._shadow(shadow, None, lambda: mlflow_proto.decode(body, ctype, shadow.runtime, max_rows)[0], rid)
        return 200, dumps(mlflow_proto.encode(pred)), JSON, _model_headers(ep.name, dep, rid)

    def _deadline(self, headers: dict[str, str]) -> float | None:
        """The request's deadline (monotonic): its header, else the server's default."""
        raw = headers.get(DEADLINE_HEADER)
        if raw is None:
            ms = self.settings.deadline_ms
            return time.monotonic() + ms / 1000.0 if ms else None
        return _deadline(raw)

    def _request_id(self, given: str | None) -> str:
        """``given`` when it is a usable id, else a new one. An id is the join key for delayed
        labels, so one too long or unprintable is refused (400), never silently cut."""
        if given is None or given == "":
            return _new_request_id()
        cap = self.settings.max_request_id
        if len(given) > cap or not (given.isascii() and given.isprintable()):
            raise BadRequest(f"request id (x-request-id or the body's 'id') must be at most {cap} printable ASCII "
                             f"characters. Got {len(given)} characters instead.")
        return given

    def _default_endpoint(self, scope, headers):
        name = headers.get(MODEL_HEADER)
        if name is None and scope.get("query_string"):
            from urllib.parse import parse_qs

            name = (parse_qs(scope["query_string"].decode("latin-1")).get("model") or [None])[0]
        if name is not None:
            ep = self.fleet.endpoints.get(name)
            if ep is None:
                raise ModelNotFound(name)
            return ep
        for ep in self.fleet.endpoints.values():
            return ep
        raise ModelNotFound("(none served)")

    # -- shadow -------------------------------------------------------------------------------

    def _shadow(self, dep, rows, decode=None, rid: str | None = None) -> None:
        """Predict ``rows`` on the shadow deployment, or what ``decode()`` makes of the request
        for its own signature (a request the shadow cannot read is a shadow error)."""
        task = asyncio.get_running_loop().create_task(self._run_shadow(dep, rows, decode, rid))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _run_shadow(self, dep, rows, decode=None, rid: str | None = None) -> None:
        try:
            if decode is not None:
                rows = decode()
                rows.ids = _row_ids(rid, rows.n)  # the same request ids: shadow agreement joins on them
            await dep.predict(rows)
        except Exception:  # noqa: BLE001 - a shadow never affects the primary answer
            self.metrics.shadow_errors.labels(dep.name).inc()

    # -- admin, health, metadata --------------------------------------------------------------

    async def _admin(self, scope, receive, method, path):
        headers = header_dict(scope)
        who = auth.authorize(self.settings.admin_token, self.fleet.workspace.state_uri, headers,
                             admin.required_role(method, path), f"{method} {path}")  # roles: #11
        payload = None
        if method in ("POST", "PUT"):
            body = await read_body(receive, headers, self.settings.max_body_bytes)
            payload = loads(body) if body.strip() else None
        status, result = await admin.handle(self.fleet, method, path, payload, who=who.name)
        return status, dumps(result), JSON, None

    def _live(self):
        return 200, _LIVE, JSON, None

    def _ready(self):
        ok = self.fleet.ready
        return (200 if ok else 503), (_READY if ok else _NOT_READY), JSON, None

    def _ping(self):
        return (200 if self.fleet.ready else 503), b"\n", TEXT, None

    def _version(self):
        return 200, self._mlflow_version, TEXT, None

    def _server_metadata(self):
        return 200, dumps(oip_v2.server_metadata(loopml.__version__)), JSON, None

    def _metrics(self):
        return 200, self.metrics.render(), METRICS_TYPE, None

    def _openapi(self):
        return 200, dumps(openapi.document(list(self.fleet.endpoints))), JSON, None


_SIMPLE_ROUTES = {
    "/v2/health/live": ServeApp._live,
    "/v2/health/ready": ServeApp._ready,
    "/v2": ServeApp._server_metadata,
    "/ping": ServeApp._ping,
    "/health": ServeApp._ping,
    "/version": ServeApp._version,
    "/metrics": ServeApp._metrics,
    "/openapi.json": ServeApp._openapi,
}


def _oip_payload_for(payload: Any, dep, ep) -> Any:
    """``payload`` without the named tensors that only *another* deployment of ``ep`` reads, so
    a request carrying a challenger's extra feature still decodes for the champion."""
    inputs = payload.get("inputs") if isinstance(payload, dict) else None
    if not isinstance(inputs, list):
        return payload
    own = set(dep.runtime.column_names) | {ep.policy.key_column}  # decode_infer handles the sticky key
    others = {c for d in ep.deployments() if d is not dep for c in d.runtime.column_names} - own
    if not others:
        return payload
    kept = [t for t in inputs if not (isinstance(t, dict) and t.get("name") in others)]
    return {**payload, "inputs": kept} if kept and len(kept) < len(inputs) else payload


def _gone_probe(scope: dict, receive):
    """A callable true once the client has disconnected, from the HTTP protocol
    (:mod:`.limits`); None under a server that offers none (then nothing is dropped early)."""
    ext = scope.get("extensions")
    return ext.get(GONE_EXTENSION) if ext else None


_ADMIN_ALLOW = {"reload": "POST", "load": "POST", "unload": "POST", "traffic": "GET, POST, PUT"}


def _allowed_methods(path: str) -> str:
    """The ``Allow`` header of a 405 on ``path`` (RFC 9110 requires one)."""
    if path.startswith("/admin/"):
        parts = [p for p in path.split("/") if p][1:]
        if parts == ["models"]:
            return "GET"
        if len(parts) == 2 and parts[0] == "models":
            return "DELETE, GET"
        return _ADMIN_ALLOW.get(parts[-1], "GET") if parts else "GET"
    return "POST" if path == "/invocations" or path.endswith("/infer") else "GET"


def _require(method: str, expected: str, path: str) -> None:
    if method != expected:
        raise MethodNotAllowed(method, path)


# Request ids: a random per-process prefix and a counter (32 hex digits, like a uuid4's hex),
# unique across processes and restarts, and about 5x cheaper than uuid.uuid4() per request.
_RID_PREFIX = os.urandom(8).hex()
_rid_counter = itertools.count()


def _new_request_id() -> str:
    return f"{_RID_PREFIX}{next(_rid_counter):016x}"


def _row_ids(rid: str, n: int) -> list[str]:
    return [rid] if n == 1 else [f"{rid}:{i}" for i in range(n)]


def _deadline(raw: str) -> float:
    try:
        ms = float(raw)
    except ValueError:
        ms = -1.0
    if not ms > 0 or ms == float("inf"):
        raise BadRequest(f"{DEADLINE_HEADER} must be a positive number of milliseconds. Got {raw!r} instead.")
    return time.monotonic() + ms / 1000.0


def _model_headers(name: str, dep, rid: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-loopml-model", name.encode()), (b"x-loopml-model-version", dep.version.encode()),
            (b"x-loopml-variant", dep.label.encode()), (b"x-request-id", rid.encode("latin-1", "replace"))]


def build_app(workspace: Workspace, endpoints: list[EndpointSpec | str], settings: ServeSettings | None = None,
              *, registry: Any = None) -> ServeApp:
    """The ASGI app serving ``endpoints`` (specs or ``NAME[@ALIAS|/VERSION]`` strings).

    Nothing loads here; models load on ASGI lifespan startup (uvicorn does this before
    accepting connections). ``registry`` defaults to the workspace's
    :class:`~loopml.registry.client.Registry`. When ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set
    the app is wrapped in an OpenTelemetry tracing middleware.
    """
    settings = settings or ServeSettings.from_env()
    specs = [e if isinstance(e, EndpointSpec) else EndpointSpec.parse(e) for e in endpoints]
    metrics = ServeMetrics()
    fleet = Fleet(workspace, specs, settings, registry=registry, metrics=metrics)
    app = ServeApp(fleet, settings, metrics)
    from loopml.serve.tracing import maybe_trace

    return maybe_trace(app)
