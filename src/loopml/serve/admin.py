"""The admin API (bearer token required): list, load, unload, reload, traffic policy.

``GET /admin/models``                       every endpoint, versions and policy
``POST /admin/reload``                      re-resolve every alias now (hot swap if moved)
``POST /admin/models/{name}/reload``        the same for one endpoint
``POST /admin/models/{name}/load``          serve a model, body ``{"ref": "champion"}``
``DELETE /admin/models/{name}``             stop serving it (``POST .../unload`` too)
``GET|PUT /admin/models/{name}/traffic``    read or set the policy (see :mod:`.traffic`)

With ``--workers N`` a change is answered once every worker has applied it
(:meth:`~loopml.serve.fleet.Fleet.shared_change`), whichever worker the request reached.

Roles (:func:`required_role`): reading (GET) needs ``viewer``, every change ``deployer``; a
change is recorded in the audit log with the acting token's name (never the token).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from loopml.errors import BadRequest, MethodNotAllowed, RouteNotFound
from loopml.serve.fleet import Fleet
from loopml.serve.settings import EndpointSpec
from loopml.serve.traffic import parse_policy


log = logging.getLogger(__name__)


def required_role(method: str, path: str) -> str:
    """The least role a route needs: reads are for viewers, every change for deployers."""
    return "viewer" if method in ("GET", "HEAD") else "deployer"


async def handle(fleet: Fleet, method: str, path: str, payload: Any, who: str | None = None) -> tuple[int, dict]:
    status, result = await _route(fleet, method, path, payload)
    if who is not None and required_role(method, path) != "viewer":
        await asyncio.to_thread(_audit, fleet, method, path, payload, who)
    return status, result


def _audit(fleet: Fleet, method: str, path: str, payload: Any, who: str) -> None:
    from loopml.registry import audit

    parts = [p for p in path.split("/") if p][1:]
    model = parts[1] if len(parts) > 1 else "*"
    try:
        audit.record_event(fleet.workspace, model, "admin-" + (parts[2] if len(parts) > 2 else parts[0]),
                           f"{method} {path}", who=who, alias="admin",
                           evidence=payload if isinstance(payload, dict) else None)
    except Exception as exc:  # noqa: BLE001 - the change is made; say the record is missing
        log.warning("admin change %s %s by %s not recorded in the audit log: %s", method, path, who, exc)


async def _route(fleet: Fleet, method: str, path: str, payload: Any) -> tuple[int, dict]:
    parts = [p for p in path.split("/") if p][1:]  # drop "admin"
    if parts == ["reload"] and method == "POST":
        async with fleet.shared_change("touch"):
            models = await fleet.sync_all()
        return 200, {"models": models}
    if parts == ["models"] and method == "GET":
        return 200, {"models": [ep.describe() for ep in fleet.endpoints.values()]}
    if len(parts) < 2 or parts[0] != "models":
        raise RouteNotFound(method, path)
    name, action = parts[1], (parts[2] if len(parts) > 2 else None)
    if len(parts) > 3:
        raise RouteNotFound(method, path)
    if action is None:
        if method == "GET":
            return 200, fleet.get(name).describe()
        if method == "DELETE":
            async with fleet.shared_change("unload", name):
                await fleet.remove(name)
            return 200, {"unloaded": name}
        raise MethodNotAllowed(method, path)
    if action == "reload" and method == "POST":
        ep = fleet.get(name)
        async with fleet.shared_change("touch"):
            await fleet.sync(ep)
        return 200, ep.describe()
    if action == "load" and method == "POST":
        ref = (payload or {}).get("ref", "champion") if isinstance(payload, (dict, type(None))) else None
        if not isinstance(ref, str) or not ref:
            raise BadRequest("load body must be {\"ref\": \"ALIAS\" or \"VERSION\"}")
        spec = EndpointSpec.parse(f"{name}/{ref}" if ref.isdigit() else f"{name}@{ref}")
        async with fleet.shared_change("load", spec.name, spec.ref):
            ep = await fleet.add(spec)
        return 200, ep.describe()
    if action == "unload" and method == "POST":
        async with fleet.shared_change("unload", name):
            await fleet.remove(name)
        return 200, {"unloaded": name}
    if action == "traffic":
        if method == "GET":
            return 200, fleet.get(name).policy.to_dict()
        if method in ("PUT", "POST"):
            policy = parse_policy(payload)
            async with fleet.shared_change("touch"):
                ep = await fleet.set_policy(name, policy)
            return 200, ep.describe()
        raise MethodNotAllowed(method, path)
    raise RouteNotFound(method, path)
