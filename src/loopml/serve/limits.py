"""Connection limits uvicorn's httptools protocol lacks: a thin subclass of it.

uvicorn (0.54) offers a keep-alive idle timeout (``timeout_keep_alive``, used as is) and a
soft ``limit_concurrency`` (503 per request, the socket still accepted); its httptools
protocol has no header size cap, no header or body read timeout and no hard cap on open
connections. httptools also concatenates a header's pieces as they arrive, so a 64 MB
header is read whole, quadratically, on the event loop. :class:`LimitedHttpToolsProtocol`
adds, per connection:

- ``max_header_bytes``: request line + headers counted *before* they reach the parser;
  past the cap the answer is 431 and the connection closes (the parser never sees them);
- ``header_timeout_s``: a request's headers must be complete this long after the connection
  opens or the request's first byte arrives, else 408 and close (also reaps connections
  that never send anything);
- ``body_timeout_s``: the whole body must arrive this long after the headers, else 408 and
  close; the app's pending ``receive()`` sees ``http.disconnect``;
- ``max_connections``: past this many open connections in the process a new one gets 503
  and is closed at once.

It also hands the app a cheap disconnect probe: ``scope["extensions"]["loopml.client_gone"]``
is a callable that is true once the client has gone, so the batcher can drop a queued
request nobody will read without a watcher task per request.

Used as uvicorn's ``http=`` class (an import string, so ``--workers N`` children load it).
The limits come from the :class:`~loopml.serve.settings.ServeSettings` of the app served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from loopml.serve.http import CLIENT_GONE_EXTENSION as CLIENT_GONE
_HEAD_END = b"\r\n\r\n"


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int

    @classmethod
    def of(cls, settings: Any) -> "ConnectionLimits":
        return cls(settings.max_header_bytes, settings.header_timeout_s, settings.body_timeout_s,
                   settings.max_connections)


def limits_for(config: Any) -> ConnectionLimits:
    """The limits of the app ``config`` serves (found once per config, through its wrappers:
    uvicorn's proxy-headers middleware, loopml's tracing); ServeSettings defaults otherwise."""
    found = getattr(config, "_loopml_limits", None)
    if found is None:
        from loopml.serve.settings import ServeSettings

        app, settings = config.loaded_app, None
        for _ in range(8):
            settings = getattr(app, "settings", None)
            if isinstance(settings, ServeSettings) or app is None:
                break
            app = getattr(app, "app", None)
        if not isinstance(settings, ServeSettings):
            settings = ServeSettings()
        found = config._loopml_limits = ConnectionLimits.of(settings)
    return found


def raw_response(status: int, message: str, extra: bytes = b"") -> bytes:
    body = b'{"error": "' + message.encode() + b'"}'
    return b"".join([STATUS_LINE[status], b"content-type: application/json\r\ncontent-length: ",
                     str(len(body)).encode(), b"\r\nconnection: close\r\n", extra, b"\r\n", body])


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header/body timeouts and size and connection caps."""

    def __init__(self, config, server_state, app_state, _loop=None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits_for(self.config)
        self._in_head = True  # waiting for (the rest of) a request line and headers
        self._head_bytes = 0
        self._tail = b""  # last bytes of the previous chunk: a head end split across reads
        self._timer = None  # the header or body timeout, whichever phase we are in

    # -- connection --------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._reject(503, f"too many open connections (the cap is {self.limits.max_connections}); retry later",
                         b"retry-after: 1\r\n")
            return
        self._arm(self.limits.header_timeout_s, self._header_timeout)

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            probe = self._tail + data
            end = probe.find(_HEAD_END)
            if end < 0:
                self._head_bytes += len(data)
                self._tail = probe[-3:]
            else:
                self._head_bytes += end + len(_HEAD_END) - len(self._tail)
                self._tail = b""
            if self._head_bytes > self.limits.max_header_bytes:
                self._reject(431, f"request headers over the limit of {self.limits.max_header_bytes} bytes")
                return
        super().data_received(data)

    # -- parser callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._timer is None:  # the next request on a kept-alive connection: its first byte
            self._arm(self.limits.header_timeout_s, self._header_timeout)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:
            self.scope["extensions"] = {CLIENT_GONE: lambda: cycle.disconnected}
        self._arm(self.limits.body_timeout_s, self._body_timeout)

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head, self._head_bytes, self._tail = True, 0, b""
        super().on_message_complete()

    # -- timeouts ----------------------------------------------------------------------------

    def _arm(self, seconds: float, callback) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _header_timeout(self) -> None:
        self._timer = None
        self._reject(408, f"request headers not received within {self.limits.header_timeout_s:g} s")

    def _body_timeout(self) -> None:
        self._timer = None
        self._reject(408, f"request body not received within {self.limits.body_timeout_s:g} s")

    def _reject(self, status: int, message: str, extra: bytes = b"") -> None:
        """Answer ``status`` (unless a response is already under way) and close the connection;
        an app still waiting on this request sees the client as gone."""
        self._disarm()
        transport = self.transport
        if transport.is_closing():
            return
        cycle = self.cycle
        # answer only where an answer belongs: in a request's head, after any earlier response
        # (a pipelined one still running would interleave); in its body, before the app answered
        if (cycle is None or cycle.response_complete) if self._in_head else not cycle.response_started:
            transport.write(raw_response(status, message, extra))
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # its send() becomes a no-op, its receive() a disconnect
            cycle.message_event.set()
        transport.close()
