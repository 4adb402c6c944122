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


def test_server_started_by_up_applies_the_project_serving_section(workspace, tmp_path, monkeypatch, capsys):
    """``loopml up`` starts ``loopml serve --project <folder>``: the spec's serving section
    (batching, workers, allow_unsafe_pickle) reaches that server the same way it reaches
    ``loopml serve`` run by hand."""
    import yaml

    import loopml.cli.serve as cli_serve
    import loopml.serve.server as server_mod
    from loopml.cli.main import main
    from loopml.demo.project import SPEC_TEMPLATE, write_spec

    raw = yaml.safe_load(yaml.safe_dump(SPEC_TEMPLATE))
    raw["serving"] = {"max_batch_size": 7, "workers": 2}
    write_spec(tmp_path / "proj", raw)
    monkeypatch.chdir(tmp_path)
    sp = ServerProcess(workspace, ["fraud@champion"], port=9555, project="proj")
    cmd = sp.command()
    assert cmd[cmd.index("--project") + 1] == str((tmp_path / "proj").resolve())
    # run that command line in-process, up to the point it would start uvicorn
    seen: dict = {}
    monkeypatch.setattr(server_mod, "run", lambda ws, specs, settings, **kw: seen.update(settings=settings, **kw))
    monkeypatch.setattr(cli_serve, "_preflight", lambda *a: None)
    monkeypatch.setattr("sys.argv", ["loopml", *cmd[cmd.index("serve"):]])
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    assert seen["settings"].max_batch_size == 7 and seen["workers"] == 2 and seen["port"] == 9555
