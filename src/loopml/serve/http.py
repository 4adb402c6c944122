"""Raw ASGI plumbing for the hot path: read a bounded body, send a response.

Kept deliberately tiny (no request objects, no middleware stack) so a request costs
little more than parsing its JSON.
"""

from __future__ import annotations

from typing import Any

import orjson

from loopml.errors import BadRequest, ClientGone, PayloadTooLarge

JSON = b"application/json"
# uvicorn's http= class adding loopml's connection limits (loopml.serve.limits, imports uvicorn)
PROTOCOL = "loopml.serve.limits:LimitedHttpToolsProtocol"
# scope["extensions"][CLIENT_GONE_EXTENSION]: a callable true once the client disconnected
CLIENT_GONE_EXTENSION = "loopml.client_gone"
TEXT = b"text/plain; charset=utf-8"
_OPTS = orjson.OPT_SERIALIZE_NUMPY


def _default(obj: Any) -> Any:
    tolist = getattr(obj, "tolist", None)
    if tolist is not None:
        return tolist()
    return str(obj)


def dumps(payload: Any) -> bytes:
    return orjson.dumps(payload, default=_default, option=_OPTS)


def loads(body: bytes) -> Any:
    if not body:
        raise BadRequest("empty body; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"body is not valid JSON: {e}") from None


def header_dict(scope: dict) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


async def read_body(receive, headers: dict[str, str], limit: int) -> bytes:
    """The whole request body; PayloadTooLarge as soon as it passes ``limit`` bytes, ClientGone
    when the client disconnects (or its body timed out) before the body is complete."""
    declared = headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge("request body", limit)
        except ValueError:
            raise BadRequest("invalid Content-Length header") from None
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise PayloadTooLarge("request body", limit)
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":  # a partial body is no request
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge("request body", limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def respond(send, status: int, body: bytes, content_type: bytes = JSON,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    raw = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if headers:
        raw.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
