"""Connection limits (serve/limits.py) against a real server on 127.0.0.1 over raw sockets:
stalled headers and bodies get 408 and are closed, an oversized header gets 431, idle
keep-alive connections are reaped, the connection cap holds, health answers while a hostile
client is connected. Timeouts are set short here; nothing times the server."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest

from tests.serve.helpers import wait_for

SHORT = dict(header_timeout_s=0.3, body_timeout_s=0.3, keepalive_timeout_s=0.3, max_header_bytes=4096)
LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def short(make_server):
    return make_server(("clf",), **SHORT)


def _connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _read_all(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def test_stalled_headers_get_408_and_the_connection_is_closed(short):
    with _connect(short) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")  # never finished
        answer = _read_all(s)
    assert answer.startswith(b"HTTP/1.1 408") and b"connection: close" in answer


def test_a_connection_that_sends_nothing_is_reaped(short):
    with _connect(short) as s:
        assert _read_all(s).startswith(b"HTTP/1.1 408")


def test_stalled_headers_of_a_second_request_on_a_kept_alive_connection(short):
    with _connect(short) as s:
        s.sendall(LIVE)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\n")  # the next request stalls mid-head
        assert _read_all(s).startswith(b"HTTP/1.1 408")


def test_a_huge_header_gets_431_and_the_connection_closes(short):
    with _connect(short) as s:
        # one send, so the server has read all of it when it closes (no reset racing the 431)
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nx-big: " + b"a" * 8000 + b"\r\n\r\n")
        answer = _read_all(s)
    assert answer.startswith(b"HTTP/1.1 431") and b"4096" in answer


def test_headers_under_the_cap_with_a_body_in_the_same_read_are_fine(short):
    """The cap counts the head only, not body bytes that arrive with it."""
    body = b'{"dataframe_split": {"columns": ["f0","f1","f2","f3"], "data": [[1,2,3,4]]}}' + b" " * 20_000
    with _connect(short) as s:
        s.sendall(b"POST /invocations?model=clf HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")


def test_a_stalled_body_gets_408(short):
    with _connect(short) as s:
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"dataframe_split\"")
        answer = _read_all(s)
    assert answer.startswith(b"HTTP/1.1 408") and b"body" in answer
    assert wait_for(lambda: short.app.admission.inflight["clf"] == 0)  # the app let go of it


def test_idle_keep_alive_connections_are_reaped(short):
    with _connect(short) as s:
        s.sendall(LIVE)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        assert _read_all(s) == b""  # closed by the server, not by us


def test_the_connection_cap_holds(make_server):
    server = make_server(("clf",), max_connections=3, header_timeout_s=30)
    held = [_connect(server) for _ in range(3)]
    try:
        with _connect(server) as extra:
            try:
                extra.sendall(LIVE)
            except OSError:
                pass
            answer = _read_all(extra)
        assert not answer.startswith(b"HTTP/1.1 200")
        assert answer == b"" or answer.startswith(b"HTTP/1.1 503")
        held.pop().close()

        def served() -> bool:
            with _connect(server) as s:
                s.sendall(LIVE)
                return s.recv(4096).startswith(b"HTTP/1.1 200")
        assert wait_for(served)  # a slot freed is a slot served
    finally:
        for s in held:
            s.close()


def test_health_answers_while_a_64mb_header_is_being_sent(make_server):
    server = make_server(("clf",))  # the default limits
    outcome: dict = {}
    started = threading.Event()

    def hostile():
        with _connect(server) as s:
            try:
                s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nx-big: ")
                started.set()
                chunk = b"a" * (1 << 20)
                for _ in range(64):
                    s.sendall(chunk)
                outcome["answer"] = _read_all(s)
            except OSError as e:  # closed by the server while we were still sending
                started.set()
                outcome["error"] = type(e).__name__

    t = threading.Thread(target=hostile)
    t.start()
    assert started.wait(10)
    for _ in range(5):
        assert httpx.get(server.url + "/v2/health/live", timeout=10).status_code == 200
    t.join(30)
    assert not t.is_alive()
    assert "error" in outcome or outcome["answer"].startswith(b"HTTP/1.1 431")


def test_a_request_id_over_the_cap_is_400_not_stored(make_server):
    server = make_server(("clf",), max_request_id=64)
    row = {"dataframe_split": {"columns": ["f0", "f1", "f2", "f3"], "data": [[1, 2, 3, 4]]}}
    r = httpx.post(server.url + "/invocations", json=row, headers={"x-request-id": "r" * 65})
    assert r.status_code == 400 and "64" in r.json()["error"]
    ok = httpx.post(server.url + "/invocations", json=row, headers={"x-request-id": "r" * 64})
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "r" * 64
    oip = {"id": "a\nb", "inputs": [{"name": f, "shape": [1], "datatype": "FP64", "data": [1.0]}
                                   for f in ["f0", "f1", "f2", "f3"]]}
    bad = httpx.post(server.url + "/v2/models/clf/infer", json=oip)
    assert bad.status_code == 400  # never a 500 from echoing it in a header
