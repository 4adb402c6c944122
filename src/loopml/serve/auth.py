"""Bearer-token checks: the admin API (off unless a token is set) and optional inference auth."""

from __future__ import annotations

import hmac

from loopml.errors import AdminDisabled, NotAuthorized


def bearer(headers: dict[str, str]) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def check_admin(token: str | None, headers: dict[str, str]) -> None:
    """Raise unless the request carries the admin token; with no token configured the
    admin API does not exist (404), it is never open."""
    if not token:
        raise AdminDisabled()
    if not _matches(bearer(headers), token):
        raise NotAuthorized("admin API: send 'Authorization: Bearer <LOOPML_ADMIN_TOKEN>'")


def check_inference(token: str | None, headers: dict[str, str]) -> None:
    if token and not _matches(bearer(headers), token):
        raise NotAuthorized("inference needs 'Authorization: Bearer <LOOPML_INFERENCE_TOKEN>'")
