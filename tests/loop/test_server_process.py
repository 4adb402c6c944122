"""loop/server_process.py: port checks of the server ``loopml up`` starts."""

from __future__ import annotations

import socket

import pytest

from loopml.errors import ServeError
from loopml.loop.server_process import ServerProcess, port_free


def _port_in_time_wait() -> int:
    """A port whose last connection was closed by the listening side: it sits in TIME_WAIT,
    as the port of a server that was just stopped does."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = listener.accept()
    conn.close()  # the server side closes first: TIME_WAIT is on the server's port
    client.recv(1)  # sees the FIN
    client.close()
    listener.close()
    return port


def test_port_in_time_wait_is_free():
    port = _port_in_time_wait()
    assert port_free("127.0.0.1", port)


def test_port_with_a_listener_is_not_free():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        assert not port_free("127.0.0.1", s.getsockname()[1])


@pytest.mark.parametrize("port", [99999, -1, 65536])
def test_out_of_range_port_is_one_line_error(workspace, port):
    with pytest.raises(ServeError) as info:
        ServerProcess(workspace, ["fraud@champion"], port=port)
    msg = str(info.value)
    assert "--port" in msg and "0 to 65535" in msg and str(port) in msg and "\n" not in msg
    assert info.value.exit_code == 2
    with pytest.raises(ServeError, match="0 to 65535"):
        port_free("127.0.0.1", port)
