"""serve/settings.py and cli/serve.py: one source of serving defaults, and the spec's
``serving`` section reaching the server (CLI flag > env > spec > default)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from loopml.demo.project import SPEC_TEMPLATE, write_spec
from loopml.errors import ServeError
from loopml.serve.server import ServerHandle
from loopml.serve.settings import SERVING_ENV, UNSAFE_PICKLE_ENV, ServeSettings, resolve_serving
from loopml.spec import ServingSpec, parse_spec


@pytest.fixture(autouse=True)
def _no_serving_env(monkeypatch):
    for var in SERVING_ENV.values():
        monkeypatch.delenv(var, raising=False)


def _project(folder: Path, **serving) -> Path:
    raw = yaml.safe_load(yaml.safe_dump(SPEC_TEMPLATE))
    raw["serving"] = serving
    write_spec(folder, raw)
    return folder


def test_one_source_of_batching_defaults():
    spec_default = ServingSpec()
    settings = ServeSettings()
    assert (settings.max_batch_size, settings.max_delay_ms) == (spec_default.max_batch_size, spec_default.max_delay_ms)
    assert resolve_serving({}, None, env={}) == spec_default


def test_precedence_flag_env_spec_default():
    spec = ServingSpec(max_batch_size=7, max_delay_ms=3.0, workers=2)
    env = {"LOOPML_SERVE_MAX_DELAY_MS": "4.5", "LOOPML_SERVE_WORKERS": "3"}
    got = resolve_serving({"workers": 5, "max_batch_size": None}, spec, env=env)
    assert got.workers == 5  # flag over env over spec
    assert got.max_delay_ms == 4.5  # env over spec
    assert got.max_batch_size == 7  # spec over default
    assert got.port == ServingSpec().port  # default
    assert not got.allow_unsafe_pickle
    assert resolve_serving({}, None, env={UNSAFE_PICKLE_ENV: "1"}).allow_unsafe_pickle


@pytest.mark.parametrize("flags,env,named", [
    ({"port": 99999}, {}, "--port 99999"),
    ({}, {"LOOPML_SERVE_PORT": "70000"}, "LOOPML_SERVE_PORT 70000"),
    ({"max_batch_size": 0}, {}, "--max-batch-size 0"),
])
def test_bad_value_names_where_it_came_from(flags, env, named):
    with pytest.raises(ServeError) as info:
        resolve_serving(flags, None, env=env)
    assert str(info.value).startswith(named) and "\n" not in str(info.value) and info.value.exit_code == 2


def test_spec_max_batch_size_reaches_the_batcher(tmp_path, workspace, fake_registry):
    spec = parse_spec(yaml.safe_load((_project(tmp_path / "p", max_batch_size=7, max_delay_ms=0.5)
                                      / "loopml.yaml").read_text()))
    settings = ServeSettings.for_serving(resolve_serving({}, spec.serving, env={}), poll_interval_s=0)
    with ServerHandle(workspace, ["clf"], settings, registry=fake_registry) as server:
        batcher = server.fleet.endpoints["clf"].primary.batcher
        assert batcher.max_batch_size == 7 and batcher.max_delay == pytest.approx(0.0005)


class _Result:
    def __init__(self, exit_code: int, output: str) -> None:
        self.exit_code, self.output = exit_code, output


def _serve_cli(monkeypatch, capsys, args: list[str], cwd: Path):
    """``loopml serve`` through the real entry point, up to the point it would start uvicorn:
    (result, what the server would run with)."""
    import loopml.cli.serve as cli_serve
    import loopml.serve.server as server_mod
    from loopml.cli.main import main

    seen: dict = {}
    monkeypatch.setattr(server_mod, "run", lambda ws, specs, settings, **kw: seen.update(settings=settings, **kw))
    monkeypatch.setattr(cli_serve, "_preflight", lambda *a: None)  # no registry needed for the settings
    monkeypatch.chdir(cwd)
    monkeypatch.setattr("sys.argv", ["loopml", "serve", "-m", "fraud", "--home", str(cwd / "ws"), *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return _Result(code, out.out + out.err), seen


def test_cli_applies_the_spec_and_flags_override(tmp_path, monkeypatch, capsys):
    proj = _project(tmp_path / "p", max_batch_size=7, max_delay_ms=0.5, workers=2, port=9123)
    result, seen = _serve_cli(monkeypatch, capsys, ["--project", str(proj)], tmp_path)
    assert result.exit_code == 0, result.output
    assert seen["settings"].max_batch_size == 7 and seen["settings"].max_delay_ms == 0.5
    assert seen["workers"] == 2 and seen["port"] == 9123
    # ./loopml.yaml applies without --project; a flag wins over it
    result, seen = _serve_cli(monkeypatch, capsys, ["--max-batch-size", "11"], proj)
    assert result.exit_code == 0, result.output
    assert seen["settings"].max_batch_size == 11 and seen["workers"] == 2


def test_cli_port_out_of_range_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    result, seen = _serve_cli(monkeypatch, capsys, ["--port", "99999"], tmp_path)
    assert result.exit_code == 2 and not seen
    assert "--port 99999" in result.output and "0 to 65535" in result.output
    assert "Traceback" not in result.output and "OverflowError" not in result.output


@pytest.mark.parametrize("how", ["flag", "spec"])
def test_allow_unsafe_pickle_sets_the_env_for_the_server(tmp_path, monkeypatch, capsys, how):
    monkeypatch.setenv(UNSAFE_PICKLE_ENV, "")  # restored after the test; the CLI sets it in-process
    if how == "flag":
        result, _ = _serve_cli(monkeypatch, capsys, ["--allow-unsafe-pickle"], tmp_path)
    else:
        proj = _project(tmp_path / "p", allow_unsafe_pickle=True)
        result, _ = _serve_cli(monkeypatch, capsys, ["--project", str(proj)], tmp_path)
    assert result.exit_code == 0, result.output
    assert os.environ[UNSAFE_PICKLE_ENV] == "1" and "UNSAFE" in result.output


def test_unsafe_pickle_is_off_by_default(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(UNSAFE_PICKLE_ENV, "")
    result, _ = _serve_cli(monkeypatch, capsys, [], tmp_path)
    assert result.exit_code == 0, result.output
    assert os.environ[UNSAFE_PICKLE_ENV] == "" and "UNSAFE" not in result.output


def test_grpc_server_options_carry_the_rest_limits():
    from loopml.serve.settings import grpc_options

    opts = dict(grpc_options(ServeSettings(max_body_bytes=2048, max_header_bytes=4096, keepalive_timeout_s=7.5,
                                           max_inflight=16)))
    assert opts["grpc.max_receive_message_length"] == 2048 and opts["grpc.max_metadata_size"] == 4096
    assert opts["grpc.max_connection_idle_ms"] == 7500 and opts["grpc.max_concurrent_streams"] == 16
    assert "grpc.max_concurrent_streams" not in dict(grpc_options(ServeSettings(max_inflight=0)))


def test_grpc_metadata_past_the_header_cap_is_refused(workspace, fake_registry):
    """A real gRPC server: metadata under max_header_bytes is served, past it refused (6,000 bytes
    against 4,096; grpc's default limit, 8 KiB, would take it), as REST answers 431."""
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    from loopml.serve.server import ServerHandle

    server = ServerHandle(workspace, ["clf"], ServeSettings(poll_interval_s=0, max_header_bytes=4096), grpc_port=0,
                          registry=fake_registry).start()
    try:
        with tc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:
            assert client.is_server_live(headers={"x-small": "a" * 1000})
            with pytest.raises(InferenceServerException):
                client.is_server_live(headers={"x-big": "a" * 6000})  # grpc default would take it (8 KiB)
            assert client.is_server_live()  # the server is fine afterwards
    finally:
        server.stop()
