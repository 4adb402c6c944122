"""``loopml serve`` and ``loopml traffic``: thin shells over loopml.serve.

The lead mounts them: ``app.command("serve")(serve)`` and
``app.add_typer(traffic_app, name="traffic")``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from loopml.cli.common import HomeOpt, TrackingOpt, workspace

traffic_app = typer.Typer(help="Show or change an endpoint's traffic policy on a running server (admin API).")


def serve(
    model: Annotated[list[str], typer.Option("--model", "-m", help="NAME, NAME@ALIAS or NAME/VERSION; repeatable.")],
    host: Annotated[Optional[str], typer.Option(help="Interface to bind (default: serving.host, 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port to listen on, 0..65535 (default: serving.port, 8080).")] = None,
    grpc_port: Annotated[Optional[int], typer.Option(
        "--grpc-port", help="Also serve OIP v2 over gRPC (inference.GRPCInferenceService) on this port, same host "
                            "(default: serving.grpc_port; off).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes sharing the port (default: serving.workers, 1).")] = None,
    max_batch_size: Annotated[Optional[int], typer.Option(help="Most rows per predict call (default: serving.max_batch_size, 64).")] = None,
    max_delay_ms: Annotated[Optional[float], typer.Option(help="Longest wait for a batch to fill (default: serving.max_delay_ms, 1).")] = None,
    max_queue_rows: Annotated[Optional[int], typer.Option(help="Rows queued per model before 503 (default: serving.max_queue_rows, 4096).")] = None,
    max_inflight: Annotated[Optional[int], typer.Option(help="Requests per model handled at once; the next gets 503 + Retry-After before its body is read; 0: no bound (default: serving.max_inflight, 128).")] = None,
    deadline_ms: Annotated[Optional[float], typer.Option(help="Deadline of a request without x-loopml-deadline-ms, 504 past it; 0: none (default: serving.deadline_ms, 15000).")] = None,
    max_connections: Annotated[Optional[int], typer.Option(help="Open connections per process; the next gets 503 and is closed (default: serving.max_connections, 2048).")] = None,
    max_header_bytes: Annotated[Optional[int], typer.Option(help="Request line + headers, 431 past it (default: serving.max_header_bytes, 32768).")] = None,
    header_timeout_s: Annotated[Optional[float], typer.Option(help="Seconds to receive a request's headers, 408 past it (default: serving.header_timeout_s, 10).")] = None,
    body_timeout_s: Annotated[Optional[float], typer.Option(help="Seconds to receive a body after its headers, 408 past it (default: serving.body_timeout_s, 30).")] = None,
    keepalive_timeout_s: Annotated[Optional[float], typer.Option(help="Seconds an idle keep-alive connection stays open (default: serving.keepalive_timeout_s, 75).")] = None,
    max_request_id: Annotated[Optional[int], typer.Option(help="Characters of a request id, 400 past it (default: serving.max_request_id, 128).")] = None,
    predict_in_thread: Annotated[Optional[str], typer.Option(help="auto, always or never: predict in a thread, leaving the event loop free; auto = when a model's warm-up batch takes > 2 ms (default: serving.predict_in_thread, auto).")] = None,
    poll_interval: Annotated[float, typer.Option(help="Seconds between alias checks (0: off).")] = 2.0,
    no_log: Annotated[bool, typer.Option("--no-log", help="Do not write the prediction log.")] = False,
    allow_unsafe_pickle: Annotated[bool, typer.Option(
        "--allow-unsafe-pickle",
        help="UNSAFE: load pickle/cloudpickle model files, which run arbitrary code when loaded. "
             "Only for models whose author you trust.")] = False,
    project: Annotated[Optional[Path], typer.Option(
        "--project", "-p", help="Project folder whose loopml.yaml 'serving' section applies "
                                "(default: ./loopml.yaml when there is one).")] = None,
    home: HomeOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Serve registered models over OIP v2 and the MLflow scoring protocol.

    Each setting comes from its flag, else its LOOPML_SERVE_* variable, else loopml.yaml's
    ``serving`` section, else the default.
    """
    from loopml.serve.server import run
    from loopml.serve.settings import UNSAFE_PICKLE_ENV, EndpointSpec, ServeSettings, resolve_serving

    specs = [EndpointSpec.parse(m) for m in model]
    serving = resolve_serving({"host": host, "port": port, "grpc_port": grpc_port, "workers": workers,
                               "max_batch_size": max_batch_size,
                               "max_delay_ms": max_delay_ms, "max_queue_rows": max_queue_rows,
                               "max_inflight": max_inflight, "deadline_ms": deadline_ms,
                               "max_connections": max_connections, "max_header_bytes": max_header_bytes,
                               "header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s,
                               "keepalive_timeout_s": keepalive_timeout_s, "max_request_id": max_request_id,
                               "predict_in_thread": predict_in_thread,
                               "allow_unsafe_pickle": allow_unsafe_pickle or None},
                              _project_serving(project))
    if serving.allow_unsafe_pickle:
        # the registry reads this when it loads a model file; worker processes inherit it
        os.environ[UNSAFE_PICKLE_ENV] = "1"
        typer.echo("loopml serve: UNSAFE: pickle model files are allowed (--allow-unsafe-pickle / "
                   "serving.allow_unsafe_pickle); they run arbitrary code when loaded", err=True)
    settings = ServeSettings.for_serving(serving, poll_interval_s=poll_interval, log_predictions=not no_log,
                                         tune_gc=True)
    ws = workspace(home, tracking_uri)
    _preflight(ws, specs, serving.host, serving.port, serving.grpc_port)
    grpc = f" and gRPC port {serving.grpc_port}" if serving.grpc_port is not None else ""
    typer.echo(f"loopml serve: {', '.join(map(str, specs))} on http://{serving.host}:{serving.port}{grpc} "
               f"(workers={serving.workers}, max_batch_size={settings.max_batch_size}, "
               f"max_delay_ms={settings.max_delay_ms:g}, max_inflight={settings.max_inflight}, admin API {'on' if settings.admin_token else 'off'})", err=True)
    run(ws, specs, settings, host=serving.host, port=serving.port, workers=serving.workers, log_level="warning",
        grpc_port=serving.grpc_port, announce=True)


def _project_serving(project: Optional[Path]):
    """The ``serving`` section of the project's spec (validated whole, as every command does);
    None when no project was named and the current folder has no loopml.yaml."""
    from loopml.spec import SPEC_FILE, load_spec

    if project is None:
        if not Path(SPEC_FILE).is_file():
            return None
        project = Path(".")
    spec = load_spec(project)
    from loopml.serve.recorder import export_log_settings

    export_log_settings(spec.monitoring.prediction_log)  # read by every worker's recorder
    return spec.serving


def _preflight(ws, specs, host: str, port: int, grpc_port: int | None = None) -> None:
    """Fail fast, in one line, on what would otherwise abort the server's start-up: an unknown
    model or version, or a port in use."""
    from loopml.errors import PortInUse, ServeError
    from loopml.registry.client import Registry
    from loopml.serve.server import bind_socket

    registry = Registry(ws)
    for spec in specs:
        registry.resolve(spec.name, spec.ref)  # raises ModelNotFound naming it
    if port:
        bind_socket(host, port).close()  # raises PortInUse
    if grpc_port:
        if grpc_port == port:
            raise ServeError(f"--grpc-port {grpc_port} is the REST port too; give gRPC a port of its own")
        try:
            bind_socket(host, grpc_port).close()
        except PortInUse:
            raise ServeError(f"gRPC port {grpc_port} on {host} is already in use; pick another with --grpc-port") from None


UrlOpt = Annotated[str, typer.Option("--url", envvar="LOOPML_SERVE_URL", help="Server base URL.")]
from loopml.cli.token import ArgvTokenOpt, TokenFileOpt, read_token  # noqa: E402 - tokens never in argv (#11)


def _admin(method: str, url: str, path: str, token: Optional[str], body: dict | None = None) -> dict:
    import httpx

    from loopml.errors import LoopmlError, ServeError

    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        r = httpx.request(method, url.rstrip("/") + path, json=body, headers=headers, timeout=120)
    except httpx.HTTPError as e:
        raise ServeError(f"cannot reach {url}: {e}; is 'loopml serve' running?") from None
    data = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    if r.status_code >= 400:
        err = LoopmlError(f"{url}{path}: {data.get('error', r.text)}")
        raise err
    return data


@traffic_app.command("show")
def traffic_show(name: Annotated[str, typer.Argument(help="Model (endpoint) name.")], url: UrlOpt = "http://127.0.0.1:8080",
                 token_file: TokenFileOpt = None, token: ArgvTokenOpt = None) -> None:
    """Print an endpoint's policy, versions and queue state (a viewer token suffices)."""
    typer.echo(json.dumps(_admin("GET", url, f"/admin/models/{name}", read_token(token_file, token)), indent=2))


@traffic_app.command("set")
def traffic_set(
    name: Annotated[str, typer.Argument(help="Model (endpoint) name.")],
    kind: Annotated[str, typer.Option("--kind", help="single, canary, ab or shadow.")] = "single",
    weight: Annotated[float, typer.Option(help="Challenger share for canary / ab, 0..1.")] = 0.0,
    key: Annotated[Optional[str], typer.Option(help="ab sticky key: header:NAME or input:COLUMN.")] = None,
    challenger: Annotated[str, typer.Option(help="Challenger alias or version.")] = "challenger",
    url: UrlOpt = "http://127.0.0.1:8080",
    token_file: TokenFileOpt = None,
    token: ArgvTokenOpt = None,
) -> None:
    """Set an endpoint's traffic policy, e.g. ``loopml traffic set fraud --kind canary --weight 0.1``."""
    secret = read_token(token_file, token)
    body = {"kind": kind, "challenger": challenger}
    if kind in ("canary", "ab"):
        body["weight"] = weight
    if key is not None:
        body["key"] = key
    out = _admin("PUT", url, f"/admin/models/{name}/traffic", secret, body)
    typer.echo(json.dumps(out, indent=2))


@traffic_app.command("reload")
def traffic_reload(url: UrlOpt = "http://127.0.0.1:8080", token_file: TokenFileOpt = None,
                   token: ArgvTokenOpt = None) -> None:
    """Re-resolve every alias now (hot swap to newly promoted versions)."""
    typer.echo(json.dumps(_admin("POST", url, "/admin/reload", read_token(token_file, token)), indent=2))


