"""Server settings and endpoint specs (``NAME[@ALIAS|/VERSION]``), validated in one place."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from pydantic import ValidationError

from loopml.errors import ServeError
from loopml.spec import ServingSpec

# Environment variables for the spec's ``serving`` settings. Precedence, one rule for every
# setting and every way a server starts: CLI flag > environment > loopml.yaml > ServingSpec default.
SERVING_ENV = {
    "host": "LOOPML_SERVE_HOST",
    "port": "LOOPML_SERVE_PORT",
    "grpc_port": "LOOPML_SERVE_GRPC_PORT",
    "workers": "LOOPML_SERVE_WORKERS",
    "max_batch_size": "LOOPML_SERVE_MAX_BATCH_SIZE",
    "max_delay_ms": "LOOPML_SERVE_MAX_DELAY_MS",
    "max_queue_rows": "LOOPML_SERVE_MAX_QUEUE_ROWS",
    "max_inflight": "LOOPML_SERVE_MAX_INFLIGHT",
    "deadline_ms": "LOOPML_SERVE_DEADLINE_MS",
    "max_connections": "LOOPML_SERVE_MAX_CONNECTIONS",
    "max_header_bytes": "LOOPML_SERVE_MAX_HEADER_BYTES",
    "header_timeout_s": "LOOPML_SERVE_HEADER_TIMEOUT_S",
    "body_timeout_s": "LOOPML_SERVE_BODY_TIMEOUT_S",
    "keepalive_timeout_s": "LOOPML_SERVE_KEEPALIVE_TIMEOUT_S",
    "max_request_id": "LOOPML_SERVE_MAX_REQUEST_ID",
    "predict_in_thread": "LOOPML_SERVE_PREDICT_IN_THREAD",
    "allow_unsafe_pickle": "LOOPML_ALLOW_UNSAFE_PICKLE",
}
# the ServingSpec fields that are also ServeSettings fields (everything but where to listen)
TUNING = ("max_batch_size", "max_delay_ms", "max_queue_rows", "max_inflight", "deadline_ms", "max_connections",
          "max_header_bytes", "header_timeout_s", "body_timeout_s", "keepalive_timeout_s", "max_request_id",
          "predict_in_thread")
PREDICT_IN_THREAD = ("auto", "always", "never")
RUNTIME_CHOICES = ("auto", "sklearn", "onnx", "pyfunc", "torch", "xgboost", "lightgbm", "text-embedding")
UNSAFE_PICKLE_ENV = SERVING_ENV["allow_unsafe_pickle"]  # read by the registry when it loads a model file

_NAME = r"[A-Za-z0-9_.\-]+"
_SPEC = re.compile(rf"^(?P<name>{_NAME})(?:@(?P<alias>{_NAME})|/(?P<version>\d+))?$")


@dataclass(frozen=True)
class EndpointSpec:
    """One served model: registered ``name`` and the ``ref`` (alias or version) it follows."""

    name: str
    ref: str = "champion"

    @classmethod
    def parse(cls, text: str) -> "EndpointSpec":
        """Parse ``fraud``, ``fraud@champion`` or ``fraud/3``."""
        m = _SPEC.match(text.strip())
        if not m:
            raise ServeError(
                f"model spec '{text}' not understood; use NAME, NAME@ALIAS or NAME/VERSION"
            )
        ref = m.group("alias") or m.group("version") or "champion"
        return cls(m.group("name"), ref)

    def __str__(self) -> str:
        return f"{self.name}/{self.ref}" if self.ref.isdigit() else f"{self.name}@{self.ref}"


PORT_RANGE = (0, 65535)


def check_port(port: object, option: str = "--port") -> int:
    """``port`` as an int in 0..65535, else a one-line ServeError naming ``option`` (the flag,
    env variable or spec field it came from). ``socket.bind`` would raise a bare OverflowError."""
    low, high = PORT_RANGE
    if isinstance(port, bool) or not isinstance(port, int) or not low <= port <= high:
        raise ServeError(f"{option} {port}: not a valid port; use a number from {low} to {high} "
                         f"({low} picks a free port)")
    return port


def resolve_serving(flags: Mapping[str, Any] | None = None, spec: ServingSpec | None = None,
                    env: Mapping[str, str] | None = None) -> ServingSpec:
    """The serving settings in force: each from the CLI flag (``flags``, None = not given), else
    its environment variable (:data:`SERVING_ENV`), else the spec, else ServingSpec's default.
    A bad value is a one-line ServeError naming where it came from (flag, variable or field)."""
    env = os.environ if env is None else env
    values = (spec or ServingSpec()).model_dump()
    origin = {key: f"serving.{key}" for key in values}
    for key, var in SERVING_ENV.items():
        if env.get(var, "").strip():
            values[key], origin[key] = env[var].strip(), var
    for key, value in (flags or {}).items():
        if value is not None:
            values[key], origin[key] = value, "--" + key.replace("_", "-")
    try:
        return ServingSpec.model_validate(values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = str(err["loc"][0])
            if key in ("port", "grpc_port"):
                low, high = PORT_RANGE
                problems.append(f"{origin[key]} {values[key]}: not a valid port; use a number from {low} to {high}")
            else:
                problems.append(f"{origin.get(key, key)} {values.get(key)!r}: {err['msg'].lower()}")
        raise ServeError("; ".join(problems)) from None


# (name, predicate, description) for every numeric setting; checked by ServeSettings.validate.
_CONSTRAINTS = {
    "max_batch_size": (lambda v: isinstance(v, int) and v >= 1, "an int >= 1"),
    "max_delay_ms": (lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0"),
    "max_queue_rows": (lambda v: isinstance(v, int) and v >= 1, "an int >= 1"),
    "max_inflight": (lambda v: isinstance(v, int) and v >= 0, "an int >= 0 (0: no bound)"),
    "deadline_ms": (lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0 (0: no default deadline)"),
    "max_connections": (lambda v: isinstance(v, int) and v >= 1, "an int >= 1"),
    "max_header_bytes": (lambda v: isinstance(v, int) and v >= 1024, "an int >= 1024"),
    "header_timeout_s": (lambda v: isinstance(v, (int, float)) and v > 0, "a number > 0"),
    "body_timeout_s": (lambda v: isinstance(v, (int, float)) and v > 0, "a number > 0"),
    "keepalive_timeout_s": (lambda v: isinstance(v, (int, float)) and v > 0, "a number > 0"),
    "max_request_id": (lambda v: isinstance(v, int) and v >= 1, "an int >= 1"),
    "max_body_bytes": (lambda v: isinstance(v, int) and v >= 1024, "an int >= 1024"),
    "max_rows": (lambda v: isinstance(v, int) and v >= 1, "an int >= 1"),
    "poll_interval_s": (lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0 (0 disables polling)"),
    "drain_timeout_s": (lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0"),
    "predict_in_thread": (lambda v: v in PREDICT_IN_THREAD, "one of auto, always, never"),
    "runtime": (lambda v: v in RUNTIME_CHOICES, "one of " + ", ".join(RUNTIME_CHOICES)),
}


def _spec_default(name: str):
    return ServingSpec.model_fields[name].default


@dataclass(frozen=True)
class ServeSettings:
    """Tuning and security knobs of one server process.

    ``admin_token`` / ``inference_token`` default to ``$LOOPML_ADMIN_TOKEN`` /
    ``$LOOPML_INFERENCE_TOKEN`` through :meth:`from_env`; ``None`` disables the admin
    API and leaves inference open.
    """

    # batching, admission and connection defaults are the spec's (ServingSpec), so a server
    # started without a spec behaves exactly as one whose loopml.yaml leaves them out
    max_batch_size: int = _spec_default("max_batch_size")
    max_delay_ms: float = _spec_default("max_delay_ms")
    max_queue_rows: int = _spec_default("max_queue_rows")
    max_inflight: int = _spec_default("max_inflight")
    deadline_ms: float = _spec_default("deadline_ms")
    max_connections: int = _spec_default("max_connections")
    max_header_bytes: int = _spec_default("max_header_bytes")
    header_timeout_s: float = _spec_default("header_timeout_s")
    body_timeout_s: float = _spec_default("body_timeout_s")
    keepalive_timeout_s: float = _spec_default("keepalive_timeout_s")
    max_request_id: int = _spec_default("max_request_id")
    max_body_bytes: int = 10 * 1024 * 1024
    max_rows: int = 10_000
    poll_interval_s: float = 2.0
    drain_timeout_s: float = 30.0
    log_predictions: bool = True
    admin_token: str | None = None
    inference_token: str | None = None
    # "auto": each loaded model predicts in a thread when its warm-up batch is slow, else inline
    # (serve/fleet.py decides; a challenger puts both variants in threads whatever this says)
    predict_in_thread: str = _spec_default("predict_in_thread")
    compiled: bool = True  # NumPy fast path for simple linear pipelines (LOOPML_SERVE_COMPILED=0: off)
    # "auto": the model's flavor and tags pick its runtime; else only that runtime may serve it
    # (LOOPML_SERVE_RUNTIME; a ModelDeployment's spec.runtime reaches its pods this way)
    runtime: str = "auto"
    tune_gc: bool = False  # freeze startup objects, rarer GC passes (set by the CLI)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides) -> "ServeSettings":
        base = cls(
            admin_token=os.environ.get("LOOPML_ADMIN_TOKEN") or None,
            inference_token=os.environ.get("LOOPML_INFERENCE_TOKEN") or None,
            compiled=os.environ.get("LOOPML_SERVE_COMPILED", "1").strip().lower() not in ("0", "false", "no"),
            runtime=os.environ.get("LOOPML_SERVE_RUNTIME", "").strip() or "auto",
        ).validate()
        return base.with_(**{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def for_serving(cls, serving: ServingSpec, **overrides) -> "ServeSettings":
        """Settings for a server run with the (resolved) ``serving`` section of a spec."""
        return cls.from_env(**{**{k: getattr(serving, k) for k in TUNING}, **overrides})

    def with_(self, **changes) -> "ServeSettings":
        return replace(self, **changes).validate()

    def validate(self) -> "ServeSettings":
        for f in fields(self):
            if f.name in _CONSTRAINTS:
                ok, what = _CONSTRAINTS[f.name]
                value = getattr(self, f.name)
                if isinstance(value, bool) or not ok(value):
                    raise ServeError(f"The '{f.name}' serve setting must be {what}. Got {value!r} instead.")
        return self

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def grpc_options(settings: ServeSettings) -> list[tuple[str, int]]:
    """The REST limits as gRPC server channel arguments, so ``--grpc-port`` is held to the same
    bounds: request size (``max_body_bytes``), header size (``max_header_bytes``, metadata
    past it is refused), an idle connection closed after ``keepalive_timeout_s``, and at most
    ``max_inflight`` concurrent RPCs per connection (HTTP/2 streams; admission still bounds
    each model across connections, 0 leaves grpc's default)."""
    options = [("grpc.max_receive_message_length", settings.max_body_bytes),
               ("grpc.max_send_message_length", -1),
               # soft and hard limit alike: between the two grpc refuses at random
               ("grpc.max_metadata_size", settings.max_header_bytes),
               ("grpc.absolute_max_metadata_size", settings.max_header_bytes),
               ("grpc.max_connection_idle_ms", int(settings.keepalive_timeout_s * 1000))]
    if settings.max_inflight:
        options.append(("grpc.max_concurrent_streams", settings.max_inflight))
    return options
