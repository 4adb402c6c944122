"""Server settings and endpoint specs (``NAME[@ALIAS|/VERSION]``), validated in one place."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace

from loopml.errors import ServeError

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


# (name, predicate, description) for every numeric setting; checked by ServeSettings.validate.
_CONSTRAINTS = {
    "max_batch_size": (lambda v: isinstance(v, int) and v >= 1, "an int >= 1"),
    "max_delay_ms": (lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0"),
    "max_queue_rows": (lambda v: isinstance(v, int) and v >= 1, "an int >= 1"),
    "max_body_bytes": (lambda v: isinstance(v, int) and v >= 1024, "an int >= 1024"),
    "max_rows": (lambda v: isinstance(v, int) and v >= 1, "an int >= 1"),
    "poll_interval_s": (lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0 (0 disables polling)"),
    "drain_timeout_s": (lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0"),
}


@dataclass(frozen=True)
class ServeSettings:
    """Tuning and security knobs of one server process.

    ``admin_token`` / ``inference_token`` default to ``$LOOPML_ADMIN_TOKEN`` /
    ``$LOOPML_INFERENCE_TOKEN`` through :meth:`from_env`; ``None`` disables the admin
    API and leaves inference open.
    """

    max_batch_size: int = 64
    max_delay_ms: float = 1.0
    max_queue_rows: int = 4096
    max_body_bytes: int = 10 * 1024 * 1024
    max_rows: int = 10_000
    poll_interval_s: float = 2.0
    drain_timeout_s: float = 30.0
    log_predictions: bool = True
    admin_token: str | None = None
    inference_token: str | None = None
    predict_in_thread: bool = False
    compiled: bool = True  # NumPy fast path for simple linear pipelines (LOOPML_SERVE_COMPILED=0: off)
    tune_gc: bool = False  # freeze startup objects, rarer GC passes (set by the CLI)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides) -> "ServeSettings":
        base = cls(
            admin_token=os.environ.get("LOOPML_ADMIN_TOKEN") or None,
            inference_token=os.environ.get("LOOPML_INFERENCE_TOKEN") or None,
            compiled=os.environ.get("LOOPML_SERVE_COMPILED", "1").strip().lower() not in ("0", "false", "no"),
        )
        return base.with_(**{k: v for k, v in overrides.items() if v is not None})

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
