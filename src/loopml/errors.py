"""One error root for loopml.

Every error a user can cause is a :class:`LoopmlError` subclass named after the
condition, constructed from the offending names, and knowing its HTTP status and
CLI exit code. The CLI prints ``str(error)`` on one line and exits with
``error.exit_code``; the HTTP server answers ``{"error": str(error)}`` with
``error.http_status``.
"""

from __future__ import annotations


class LoopmlError(Exception):
    """Root of every error loopml raises on purpose."""

    http_status: int = 400
    exit_code: int = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class SpecError(LoopmlError):
    """The project spec (loopml.yaml) is missing, unreadable or invalid."""

    def __init__(self, path: str, problems: list[str] | str) -> None:
        if isinstance(problems, str):
            problems = [problems]
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class DataSourceError(LoopmlError):
    """A data file is missing, unreadable or malformed."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        super().__init__(f"{source}: {reason}")


class SnapshotNotFound(LoopmlError):
    http_status = 404

    def __init__(self, snapshot_id: str) -> None:
        self.snapshot_id = snapshot_id
        super().__init__(
            f"snapshot '{snapshot_id}' not found; run 'loopml data snapshot' first"
        )


class ContractViolation(LoopmlError):
    """The data contract failed; the report lists every violation."""

    exit_code = 1
    http_status = 422

    def __init__(self, summary: str) -> None:
        super().__init__(summary)


class EstimatorImportError(LoopmlError):
    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(
            f"model.estimator: cannot import '{path}': {reason}; "
            "give a 'module.Class' path such as sklearn.linear_model.LogisticRegression"
        )


class ModelNotFound(LoopmlError):
    http_status = 404

    def __init__(self, name: str, version: str | None = None) -> None:
        self.name = name
        self.version = version
        what = f"model '{name}'" if version is None else f"model '{name}' version/alias '{version}'"
        super().__init__(f"{what} not found in the registry; see 'loopml history {name}' or train one with 'loopml run'")


class RegistrationError(LoopmlError):
    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        super().__init__(f"registering '{name}' failed: {reason}")


class ServeError(LoopmlError):
    """Serving could not start (port in use, bad host, ...)."""


class PortInUse(ServeError):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"port {port} on {host} is already in use; pick another with --port")


class NotAuthorized(LoopmlError):
    http_status = 401

    def __init__(self, reason: str) -> None:
        super().__init__(reason)


class MonitorError(LoopmlError):
    """A monitoring check could not run (no reference, empty log, ...)."""


class PipelineStepFailed(LoopmlError):
    def __init__(self, step: str, reason: str) -> None:
        self.step = step
        super().__init__(f"step '{step}' failed: {reason}")


# --- serving: request errors (each answers {"error": str(e)} with its status) ---


class BadRequest(LoopmlError):
    """The request body is malformed (not JSON, wrong structure, shape mismatch)."""

    http_status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)


class InvalidInput(LoopmlError):
    """The request is well formed but its inputs do not fit the model's signature."""

    http_status = 422

    def __init__(self, reason: str) -> None:
        super().__init__(reason)


class UnsupportedMediaType(LoopmlError):
    http_status = 415

    def __init__(self, content_type: str, expected: str) -> None:
        self.content_type = content_type
        super().__init__(f"content type '{content_type}' not supported; send {expected}")


class PayloadTooLarge(LoopmlError):
    http_status = 413

    def __init__(self, what: str, limit: int) -> None:
        self.limit = limit
        super().__init__(f"{what} over the limit of {limit}")


class RouteNotFound(LoopmlError):
    http_status = 404

    def __init__(self, method: str, path: str) -> None:
        super().__init__(f"no route for {method} {path}")


class MethodNotAllowed(LoopmlError):
    http_status = 405

    def __init__(self, method: str, path: str) -> None:
        super().__init__(f"method {method} not allowed on {path}")


class Overloaded(LoopmlError):
    """A model's queue is full; the client should retry after ``retry_after`` seconds."""

    http_status = 503

    def __init__(self, model: str, retry_after: int = 1) -> None:
        self.model = model
        self.retry_after = retry_after
        super().__init__(f"model '{model}' is overloaded; retry after {retry_after}s")


class DeadlineExceeded(LoopmlError):
    http_status = 504

    def __init__(self, deadline_ms: float) -> None:
        super().__init__(f"request deadline of {deadline_ms:g} ms exceeded")


class AdminDisabled(LoopmlError):
    """The admin API is off because no token is configured (it is never open)."""

    http_status = 404

    def __init__(self) -> None:
        super().__init__("the admin API is disabled; set LOOPML_ADMIN_TOKEN to enable it")


class ModelNotReady(LoopmlError):
    http_status = 503

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"model '{name}' is not loaded yet")


class InvalidTrafficPolicy(LoopmlError):
    http_status = 422

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid traffic policy: {reason}")


# --- fail closed: the registry and model trust (issue #8) ---


class RegistryUnavailable(LoopmlError):
    """The tracking server / registry could not be asked (unreachable, 5xx, unauthorised).

    Never read as "not found": the step that needed the registry stops and changes nothing.
    """

    http_status = 503

    def __init__(self, uri: str, reason: str) -> None:
        self.uri = uri
        self.reason = reason
        super().__init__(f"model registry at {uri} is unavailable: {reason}; nothing was changed; "
                         "check that the tracking server is running and reachable (LOOPML_TRACKING_URI)")


class UnsafeModelFormat(LoopmlError):
    """A model file would be deserialised with pickle/cloudpickle, which can run arbitrary code."""

    http_status = 422

    def __init__(self, name: str, version: str, fmt: str) -> None:
        self.name, self.version, self.format = name, version, fmt
        super().__init__(f"model '{name}' version {version} is stored as {fmt}, which runs arbitrary code when "
                         "loaded; refused. Re-log it with skops, or opt in with --allow-unsafe-pickle "
                         "(LOOPML_ALLOW_UNSAFE_PICKLE=1) if you trust its author")


class ModelCheckFailed(LoopmlError):
    """A version did not load or did not answer its smoke prediction; no alias may point at it."""

    http_status = 422

    def __init__(self, name: str, version: str, reason: str) -> None:
        self.name, self.version, self.reason = name, version, reason
        super().__init__(f"model '{name}' version {version} failed its check (load + predict on its input "
                         f"example): {reason}; it is tagged loopml.status=broken and no alias was moved")


class VersionBlocked(LoopmlError):
    """A rolled-back version is blocked from automatic rollout until promoted by hand."""

    http_status = 409

    def __init__(self, name: str, version: str, why: str) -> None:
        self.name, self.version = name, version
        super().__init__(f"model '{name}' version {version} is blocked ({why}); only 'loopml promote {name} "
                         f"{version}' by hand unblocks it")


class BatchFailed(LoopmlError):
    """The batching worker of a model failed outside the model itself; it was restarted.

    The request was not answered and may be retried at once (the next batch is served).
    """

    http_status = 503

    def __init__(self, model: str, reason: str) -> None:
        self.model = model
        super().__init__(f"model '{model}': the batching worker failed ({reason}); this request was not "
                         "answered and the worker was restarted; retry the request")


class NotADemoWorkspace(LoopmlError):
    """``loopml demo`` wipes its workspace at each run, so it refuses a folder it did not create."""

    def __init__(self, path: str, why: str) -> None:
        self.path = path
        super().__init__(f"refusing to run the demo in {path}: {why}")


class ControllerRunning(LoopmlError):
    """Another ``loopml up`` already runs the loop for this workspace (one controller per project)."""

    http_status = 409

    def __init__(self, lock_path: str, pid: int | None, started_at: str | None, project: str | None) -> None:
        self.lock_path, self.pid, self.started_at, self.project = lock_path, pid, started_at, project
        who = f"pid {pid}" if pid else "pid unknown"
        when = f", started at {started_at}" if started_at else ""
        where = f", project {project}" if project else ""
        stop = f"stop it first (Ctrl-C in its terminal, or 'kill {pid}')" if pid else f"stop it first (lock {lock_path})"
        super().__init__(f"another 'loopml up' is already running for this workspace ({who}{when}{where}); {stop}")


class WorkersLagging(LoopmlError):
    """An admin change was applied by this worker but not yet by every sibling worker."""

    http_status = 503

    def __init__(self, applied: int, total: int, timeout_s: float) -> None:
        self.applied, self.total = applied, total
        super().__init__(f"the change was applied by {applied} of {total} workers within {timeout_s:g} s; "
                         "the others apply it when they can; retry to check")


# --- serving under load and hostile clients (issue #9) ---


class ClientGone(LoopmlError):
    """The client disconnected before its answer was ready; the request is dropped unpredicted.

    Never sent (nobody is listening); 499 is nginx's "client closed request", for metrics.
    """

    http_status = 499

    def __init__(self) -> None:
        super().__init__("the client disconnected before the answer was ready")


class PredictionNotLogged(LoopmlError):
    """Acknowledged prediction log: the answer's rows could not be made durable, so no answer."""

    http_status = 503

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(f"model '{model}': the prediction could not be written to the prediction log "
                         "(acknowledged mode answers only logged predictions: the log queue is full or the "
                         "disk refused the write); retry the request")


# --- model runtimes and ONNX (issue #10) ---


class UnsupportedModelFlavor(LoopmlError):
    """No model runtime takes any flavor of a version's MLmodel file."""

    http_status = 422

    def __init__(self, name: str, version: str, flavors: list[str]) -> None:
        self.name, self.version, self.flavors = name, version, flavors
        super().__init__(f"model '{name}' version {version} has flavors {flavors or '(none)'}, which no loopml "
                         "runtime serves (sklearn, onnx, python_function); log it with one of those flavors")


# --- the local platform (issue #11) ---


class PlatformComponentFailed(LoopmlError):
    """A platform engine (PostgreSQL, SeaweedFS, MLflow, Prometheus, Alertmanager) did not start."""

    http_status = 503
    exit_code = 1

    def __init__(self, component: str, reason: str, log_tail: str = "") -> None:
        self.component, self.reason, self.log_tail = component, reason, log_tail
        last = log_tail.strip().splitlines()[-1:] if log_tail else []
        hint = f" (last log line: {last[0][:300]})" if last else ""
        super().__init__(f"platform component '{component}' {reason}{hint}; "
                         "see its log in the platform folder, then 'loopml platform down' and 'up' again")


class PlatformToolMissing(LoopmlError):
    """An engine's program is not installed where loopml looks for it."""

    def __init__(self, tool: str, install: str) -> None:
        self.tool = tool
        super().__init__(f"'{tool}' was not found; install it ({install}) or put it on PATH")


class StateStoreUnavailable(LoopmlError):
    """``LOOPML_STATE_URI`` names no store loopml can use: an unknown scheme, or a database that
    cannot be reached. loopml fails closed: it never falls back to the workspace's SQLite file."""

    http_status = 503

    def __init__(self, uri: str, why: str) -> None:
        self.uri = uri
        super().__init__(f"LOOPML_STATE_URI={uri}: {why}")


class PlatformNotStarted(LoopmlError):
    """``loopml platform status/env`` on a folder where ``up`` never ran."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        super().__init__(f"no platform in {folder}; start one with 'loopml platform up --dir {folder}'")


class ObjectNotPublished(LoopmlError):
    """An object-store name has no complete publication (never published, or a file fails its
    manifest's checksum): see loopml.platform.objstore."""

    http_status = 404

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        super().__init__(f"{url}: {reason}")


class DeployError(LoopmlError):
    """``loopml deploy k8s``: a values file or value that cannot become manifests (unknown key,
    wrong type, a credential written inline instead of referenced from a Secret)."""


class DataStoreUnavailable(LoopmlError):
    """``LOOPML_DATA_URI`` names an object store loopml cannot reach (endpoint down, bad
    credentials, missing bucket). Fails closed: never reported as "no snapshots"."""

    http_status = 503

    def __init__(self, uri: str, why: str) -> None:
        self.uri = uri
        super().__init__(f"LOOPML_DATA_URI={uri}: {why}; check the URL, AWS_ENDPOINT_URL and the AWS_* credentials")


class RemoteHomeNeedsServers(LoopmlError):
    """``LOOPML_HOME`` is an object store but MLflow or the state store would still be a SQLite
    file private to this machine: the replicas and the controller would not share them."""

    def __init__(self, home: str, variable: str) -> None:
        self.home, self.variable = home, variable
        what = "an MLflow tracking server (http://...)" if variable == "LOOPML_TRACKING_URI" else "postgresql://..."
        super().__init__(f"LOOPML_HOME={home} is on object storage, so {variable} must name a shared "
                         f"server ({what}), not a local SQLite file; set {variable}")


class HomeStoreUnavailable(DataStoreUnavailable):
    """``LOOPML_HOME`` names an object store loopml cannot reach; fails closed like
    :class:`DataStoreUnavailable`."""

    def __init__(self, uri: str, why: str) -> None:
        LoopmlError.__init__(self, f"LOOPML_HOME={uri}: {why}; check the URL, AWS_ENDPOINT_URL and the AWS_* credentials")
        self.uri = uri


class Forbidden(LoopmlError):
    """A known token whose role does not allow the action (roles: viewer < deployer < admin)."""

    http_status = 403

    def __init__(self, who: str, role: str, needed: str, action: str) -> None:
        self.who, self.role, self.needed = who, role, needed
        super().__init__(f"{action} needs the {needed} role; token {who!r} has {role}")


class TokenError(LoopmlError):
    """A token name, role or token file that cannot be used (bad input: exit 2)."""
