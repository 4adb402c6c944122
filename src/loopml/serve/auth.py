"""Bearer-token checks: the admin API (off unless a token exists) and optional inference auth.

The admin API accepts the bootstrap ``LOOPML_ADMIN_TOKEN`` (role admin) and the named tokens
of the state store (:mod:`loopml.store.tokens`), and checks each route's role: a missing or
unknown token is 401 (with ``WWW-Authenticate``), a known token with too small a role 403.
"""

from __future__ import annotations

import hmac
import threading

from loopml.errors import AdminDisabled, Forbidden, NotAuthorized
from loopml.store.tokens import Identity, Verifier

_verifiers: dict[tuple[str | None, str | None], Verifier] = {}
_lock = threading.Lock()


def bearer(headers: dict[str, str]) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def verifier(admin_token: str | None, state_uri: str | None) -> Verifier:
    """One cached :class:`Verifier` per process and configuration (its cache is the point)."""
    key = (admin_token or None, state_uri)
    with _lock:
        found = _verifiers.get(key)
        if found is None:
            found = _verifiers[key] = Verifier(state_uri, admin_token)
        return found


def authorize(admin_token: str | None, state_uri: str | None, headers: dict[str, str], needed: str,
              action: str = "this admin route") -> Identity:
    """The identity behind the request's bearer token if its role is at least ``needed``."""
    check = verifier(admin_token, state_uri)
    who = check.identify(bearer(headers))
    if who is None:
        if not check.enabled():  # no token anywhere: the admin API does not exist (404), never open
            raise AdminDisabled()
        raise NotAuthorized("admin API: send 'Authorization: Bearer <token>' (LOOPML_ADMIN_TOKEN or one from "
                            "'loopml token create')")
    if not who.allows(needed):
        raise Forbidden(who.name, who.role, needed, action)
    return who


def check_admin(token: str | None, headers: dict[str, str]) -> None:
    """The bootstrap token only (no state store): kept for callers without one."""
    authorize(token, None, headers, "admin")


def check_inference(token: str | None, headers: dict[str, str]) -> None:
    if token and not _matches(bearer(headers), token):
        raise NotAuthorized("inference needs 'Authorization: Bearer <LOOPML_INFERENCE_TOKEN>'")
