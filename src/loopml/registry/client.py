"""The only place that talks to MLflow: tracking runs, model versions and aliases.

Aliases are ``champion`` and ``challenger``. Every alias change goes through
:meth:`Registry.set_alias`, which first checks the version (load + predict on its input
example), then tags the version in MLflow and appends a line to the workspace's audit log,
so ``loopml history`` can say who changed what, when and why.

It fails closed: every MLflow call goes through :meth:`Registry._guard`, which tells an
answer ("no such model", "already exists") apart from a registry that could not be asked
(unreachable, 5xx, 401/403, a locked database) and turns the latter into
:class:`~loopml.errors.RegistryUnavailable`, never into "not found". Each ``Registry`` has
its own ``MlflowClient``; nothing here changes process-global MLflow state.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from loopml.config import Workspace
from loopml.errors import (LoopmlError, ModelCheckFailed, ModelNotFound, RegistrationError, RegistryUnavailable,
                           UnsafeModelFormat)
from loopml.registry import audit

CHAMPION = "champion"
CHALLENGER = "challenger"
SNAPSHOT_TAG = "loopml.snapshot_id"
STATUS_TAG = "loopml.status"
BLOCKED_TAG = "loopml.blocked"
UNSAFE_PICKLE_ENV = "LOOPML_ALLOW_UNSAFE_PICKLE"

# MLflow error codes that are an *answer* from the registry about the object asked for; any
# other failure means the registry could not be asked.
_NOT_FOUND = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})
_ANSWERS = _NOT_FOUND | {"RESOURCE_ALREADY_EXISTS", "INVALID_STATE"}

# MLflow's own defaults retry 7 times with a backoff factor of 2 and a 120 s timeout: minutes
# before a stopped tracking server is reported. loopml's bound: about 3 s for a refused
# connection or a server answering 5xx, 3 x 5 s for one that never answers. A value the user
# set in the environment wins.
HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}


@dataclass
class ModelVersionRef:
    name: str
    version: str
    run_id: str | None
    source: str
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def blocked(self) -> str | None:
        """Why this version is blocked from automatic rollout (see :meth:`Registry.block`), or None."""
        return self.tags.get(BLOCKED_TAG) or None


def parse_model_ref(text: str) -> tuple[str, str]:
    """``NAME``, ``NAME@ALIAS`` or ``NAME/VERSION`` -> (name, alias-or-version)."""
    if "@" in text:
        name, ref = text.split("@", 1)
    elif "/" in text:
        name, ref = text.rsplit("/", 1)
    else:
        name, ref = text, CHAMPION
    if not name or not ref:
        raise ModelNotFound(text)
    return name, ref


# -- failing closed -----------------------------------------------------------------------------

def _error_code(exc: BaseException) -> str | None:
    code = getattr(exc, "error_code", None)
    return code if isinstance(code, str) else None


def _is_answer(exc: BaseException) -> bool:
    return _error_code(exc) in _ANSWERS


def _is_not_found(exc: BaseException) -> bool:
    return _error_code(exc) in _NOT_FOUND


def _is_unavailable(exc: BaseException) -> bool:
    """Could the registry not be asked? (as opposed to a bug in the caller, or an answer)."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        return not _is_answer(exc)
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    module = type(exc).__module__ or ""
    return module.split(".")[0] in ("requests", "urllib3", "sqlalchemy", "sqlite3")


def _reason(exc: BaseException) -> str:
    """One short line for the user: what went wrong talking to the registry."""
    text = " ".join(str(exc).split())
    code = _error_code(exc)
    if code in ("PERMISSION_DENIED", "UNAUTHENTICATED") or " 401 " in text or " 403 " in text:
        return f"access denied ({code or 'HTTP 401/403'}); check MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD"
    if "Connection refused" in text or "Failed to establish a new connection" in text:
        return "connection refused"
    if "timeout" in text.lower() or "timed out" in text.lower():
        return "no answer within the time-out (MLFLOW_HTTP_REQUEST_TIMEOUT)"
    if "too many" in text and "error responses" in text:
        return "the server keeps answering with server errors (HTTP 5xx)"
    if "database is locked" in text:
        return "the registry database is locked by another process; try again"
    return f"{type(exc).__name__}: {text[:300]}"


class _BoundedHttp:
    """While any loopml registry call is in flight, MLflow's HTTP retry and time-out variables
    that the user did not set hold :data:`HTTP_BOUNDS`; afterwards the environment is as it was.

    MLflow reads these variables on every request and offers no per-client setting, so the
    bound is scoped to loopml's own calls instead of being left in the process for others.
    """

    _lock = threading.Lock()
    _depth = 0
    _ours: dict[str, str] = {}

    @classmethod
    @contextlib.contextmanager
    def scope(cls) -> Iterator[None]:
        with cls._lock:
            if cls._depth == 0:
                cls._ours = {k: v for k, v in HTTP_BOUNDS.items() if k not in os.environ}
                os.environ.update(cls._ours)
            cls._depth += 1
        try:
            yield
        finally:
            with cls._lock:
                cls._depth -= 1
                if cls._depth == 0:
                    for k, v in cls._ours.items():
                        if os.environ.get(k) == v:
                            del os.environ[k]
                    cls._ours = {}


class _GuardedClient:
    """An ``MlflowClient`` whose every method call runs inside :meth:`Registry._guard`."""

    def __init__(self, client: Any, guard: Callable[[], Any]) -> None:
        self._client = client
        self._guard_factory = guard

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            with self._guard_factory():
                return attr(*args, **kwargs)

        return call


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class TrackedRun:
    """One MLflow run, opened by :meth:`Registry.run`; everything goes through the registry's client."""

    def __init__(self, client: Any, run_id: str, experiment_id: str) -> None:
        self._client = client
        self.run_id = run_id
        self.experiment_id = experiment_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        self._client.log_batch(self.run_id, params=[Param(k, str(v)[:500]) for k, v in params.items()])

    def log_metrics(self, metrics: dict[str, float], prefix: str = "", step: int = 0) -> None:
        import math
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        rows = [Metric(prefix + k, float(v), ts, step) for k, v in metrics.items() if v is not None and not math.isnan(v)]
        if rows:
            self._client.log_batch(self.run_id, metrics=rows)

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_dict(self, data: dict, name: str) -> None:
        self._client.log_dict(self.run_id, data, name)

    def log_dataset(self, df: Any, *, source: str, name: str, context: str) -> None:
        from mlflow.data.pandas_dataset import from_pandas
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        ds = from_pandas(df, source=source, name=name)
        self._client.log_inputs(self.run_id, datasets=[
            DatasetInput(dataset=ds._to_mlflow_entity(), tags=[InputTag(key=MLFLOW_DATASET_CONTEXT, value=context)])])

    def log_model(self, model: Any, input_example: Any, flavor: str = "sklearn") -> str:
        """Save ``model`` with skops (trusting only its own types) as an MLflow logged model of this
        run, through the client; returns its ``models:/m-...`` URI for :meth:`Registry.register`.
        ``flavor="loopml_torch"``: a :class:`~loopml.train.torch_model.TorchTabularModel`, saved
        in its own pickle-free format behind a ``python_function`` loader (see _save_torch)."""
        import mlflow.sklearn
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models import Model, infer_signature

        signature = infer_signature(input_example, _predict_sample(model, input_example))
        logged = self._client.create_logged_model(self.experiment_id, name="model", source_run_id=self.run_id)
        self._client.log_outputs(self.run_id, [LoggedModelOutput(logged.model_id, step=0)])
        with tempfile.TemporaryDirectory(prefix="loopml-model-") as tmp:
            local = os.path.join(tmp, "model")
            meta = Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=self.run_id,
                         model_id=logged.model_id)
            if flavor == TORCH_FLAVOR:
                _save_torch(model, local, meta, signature, input_example, tmp)
            else:
                mlflow.sklearn.save_model(model, local, mlflow_model=meta, signature=signature,
                                          input_example=input_example, serialization_format="skops",
                                          skops_trusted_types=_own_types(model),
                                          pip_requirements=_requirements(model))
            self._client.log_model_artifacts(logged.model_id, local)
        self._client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        return f"models:/{logged.model_id}"


TORCH_FLAVOR = "loopml_torch"  # loopml.train.contract.FLAVOR_TORCH
TORCH_LOADER = "loopml.train.torch_model"


def _save_torch(model: Any, local: str, meta: Any, signature: Any, input_example: Any, tmp: str) -> None:
    """state_dict + module path + skops preprocessing (never a pickle), with a python_function
    flavor whose loader is loopml's own safe loader."""
    import mlflow.pyfunc
    import torch

    data = os.path.join(tmp, "torch-data")
    model.save(data)
    meta.add_flavor(TORCH_FLAVOR, format="state_dict+skops", module=model.module_path,
                    torch_version=str(torch.__version__))
    mlflow.pyfunc.save_model(local, loader_module=TORCH_LOADER, data_path=data, mlflow_model=meta,
                             signature=signature, input_example=input_example,
                             pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "scikit-learn", "skops"])


def _requirements(model: Any) -> list[str]:
    """Pinned requirements of a fitted model, named instead of inferred: MLflow's inference loads
    the model in a subprocess to see what it imports (seconds per registration). The packages
    are those of every object in the model (a pipeline's steps, their estimators) plus what the
    skops file and MLflow's loader need, each at the version installed here."""
    import importlib.metadata as md

    tops = {"mlflow", "sklearn", "skops", "numpy", "pandas", "scipy"}
    seen, todo = set(), [model]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        tops.add(type(obj).__module__.split(".")[0])
        params = obj.get_params(deep=False) if hasattr(obj, "get_params") else {}
        for value in params.values():
            items = value if isinstance(value, (list, tuple)) else [value]
            for item in items:  # (name, step) pairs of pipelines and column transformers
                for part in (item if isinstance(item, tuple) else (item,)):
                    if hasattr(part, "get_params"):
                        todo.append(part)
    dists = md.packages_distributions()
    out = set()
    for top in tops:
        found = dists.get(top, [])
        # mlflow's modules also belong to mlflow-skinny and mlflow-tracing: name the package itself
        for dist in [d for d in found if d.lower() == top] or found:
            try:
                out.add(f"{dist}=={md.version(dist)}")
            except md.PackageNotFoundError:
                continue
    return sorted(out, key=str.lower)


def _own_types(model: Any) -> list[str]:
    """Types skops must be told to trust: those of the model loopml has just fitted itself."""
    import skops.io as sio

    return list(sio.get_untrusted_types(data=sio.dumps(model)))


def _logged_model_id(model_uri: str) -> str | None:
    """``models:/m-...`` (a logged model, as ``log_model`` returns it) -> ``m-...``, else None.

    A tracking server's REST API only accepts such a source together with its model id
    (the local SQLite store looks it up itself), so registration passes it along.
    """
    if not model_uri.startswith("models:/"):
        return None
    rest = model_uri[len("models:/"):].strip("/")
    return rest if rest and "/" not in rest and "@" not in rest else None


def _predict_sample(model: Any, X: Any) -> Any:
    return model.predict(X)


class Registry:
    """MLflow tracking + registry for one workspace. Constructing it does no I/O.

    ``allow_unsafe_pickle``: load model files stored with pickle/cloudpickle (which run
    arbitrary code when loaded); None reads ``LOOPML_ALLOW_UNSAFE_PICKLE`` ("1"/"true").
    """

    def __init__(self, workspace: Workspace, allow_unsafe_pickle: bool | None = None) -> None:
        self.workspace = workspace
        self._allow_unsafe_pickle = allow_unsafe_pickle
        self._client: _GuardedClient | None = None
        self._checked: set[tuple[str, str]] = set()  # (name, version) that passed check()

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def allow_unsafe_pickle(self) -> bool:
        if self._allow_unsafe_pickle is not None:
            return self._allow_unsafe_pickle
        return _env_flag(UNSAFE_PICKLE_ENV)

    @property
    def _remote(self) -> bool:
        return self.workspace.tracking_uri.startswith(("http://", "https://"))

    @contextlib.contextmanager
    def _guard(self, translate: bool = True) -> Iterator[None]:
        """The one place registry failures are classified: an answer (not found, already exists,
        invalid name) passes through for the caller to read; a registry that could not be asked
        becomes RegistryUnavailable. HTTP retries and time-outs are bounded meanwhile."""
        with _BoundedHttp.scope() if self._remote else contextlib.nullcontext():
            try:
                yield
            except LoopmlError:
                raise
            except Exception as exc:
                if translate and _is_unavailable(exc):
                    raise RegistryUnavailable(self.workspace.tracking_uri, _reason(exc)) from exc
                raise

    @property
    def client(self) -> Any:
        """This registry's own ``MlflowClient`` (every call guarded, see :meth:`_guard`)."""
        if self._client is None:
            from mlflow import MlflowClient

            uri = self.workspace.tracking_uri
            self.workspace.init()
            # MLflow creates its schema when a SQL store is first built (in the constructor) or
            # used; two processes doing it at once on a new workspace collide, so both happen
            # under the workspace lock.
            with self.workspace.lock() if uri.startswith("sqlite:") else contextlib.nullcontext():
                with self._guard():
                    client = _GuardedClient(MlflowClient(tracking_uri=uri, registry_uri=uri), self._guard)
                if uri.startswith("sqlite:"):
                    client.search_experiments(max_results=1)
                    client.search_registered_models(max_results=1)
            self._client = client
        return self._client

    def experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        # A tracking *server* decides where artifacts go (mlflow-artifacts:/); a database URI
        # (sqlite, postgresql, ...) would default to ./mlruns, so the workspace holds them.
        location = None if self._remote else self.workspace.artifacts.as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException as exc:
            if _error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = self.client.get_experiment_by_name(name)  # another process created it just now
            if exp is None:
                raise
            return exp.experiment_id

    @contextlib.contextmanager
    def run(self, experiment: str, run_name: str | None = None) -> Iterator[TrackedRun]:
        """An MLflow run marked FINISHED on success and FAILED when the block raises."""
        exp_id = self.experiment_id(experiment)
        run = self.client.create_run(exp_id, run_name=run_name,
                                     tags={"mlflow.user": audit.current_user(), "mlflow.source.name": "loopml"})
        run_id = run.info.run_id
        try:
            yield TrackedRun(self.client, run_id, exp_id)
        except BaseException:
            with contextlib.suppress(Exception):  # the block's own error is the one to report
                self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")

    # -- versions ---------------------------------------------------------------------------
    def register(self, model_uri: str, name: str, run_id: str, tags: dict[str, Any]) -> ModelVersionRef:
        """Register a logged model as a new version; check it loads and predicts before returning it."""
        from mlflow.exceptions import MlflowException

        client = self.client
        try:
            client.get_registered_model(name)
        except MlflowException as exc:
            if not _is_not_found(exc):
                raise
            try:
                client.create_registered_model(name)
            except MlflowException as exc2:
                if _error_code(exc2) != "RESOURCE_ALREADY_EXISTS":  # a concurrent run created it
                    raise RegistrationError(name, str(exc2).splitlines()[0]) from None
        model_id = _logged_model_id(model_uri)
        source = model_uri
        if model_id and not self._remote:
            # MLflow's SQL registry store looks a models:/m-... source up through the *global*
            # tracking URI (a TODO in MLflow); give it the logged model's location instead.
            source = client.get_logged_model(model_id).artifact_location
        try:
            mv = client.create_model_version(name, source, run_id=run_id,
                                             tags={k: str(v) for k, v in tags.items()}, model_id=model_id)
        except LoopmlError:
            raise
        except Exception as exc:  # noqa: BLE001 - the registry answered no
            raise RegistrationError(name, str(exc).splitlines()[0]) from None
        ref = self.resolve(name, str(mv.version))
        try:
            self.check(ref)
        except ModelCheckFailed as exc:  # a version that cannot load never gets an alias
            raise RegistrationError(name, f"version {ref.version} does not load and predict: {exc.reason}") from None
        return ref

    def resolve(self, name: str, ref: str = CHAMPION) -> ModelVersionRef:
        """The version ``ref`` (a number or an alias) of ``name``. ModelNotFound only when the
        registry says there is no such thing; RegistryUnavailable when it could not be asked."""
        from mlflow.exceptions import MlflowException

        client = self.client
        try:
            if ref.isdigit():
                mv = client.get_model_version(name, ref)
            else:
                mv = client.get_model_version_by_alias(name, ref)
        except MlflowException as exc:
            if _is_not_found(exc):  # RESOURCE_DOES_NOT_EXIST, or a name MLflow rejects
                raise ModelNotFound(name, ref) from None
            raise
        return ModelVersionRef(name=mv.name, version=str(mv.version), run_id=mv.run_id, source=mv.source,
                               aliases=list(getattr(mv, "aliases", []) or []), tags=dict(mv.tags or {}))

    def try_resolve(self, name: str, ref: str = CHAMPION) -> ModelVersionRef | None:
        """Like :meth:`resolve`, but None when there is no such version or alias (only then)."""
        try:
            return self.resolve(name, ref)
        except ModelNotFound:
            return None

    def versions(self, name: str) -> list[ModelVersionRef]:
        from mlflow.exceptions import MlflowException

        client = self.client
        found = client.search_model_versions(f"name = '{name}'")
        by_version: dict[str, list[str]] = {}
        try:
            aliases = client.get_registered_model(name).aliases or {}
        except MlflowException as exc:
            if not _is_not_found(exc):
                raise
            aliases = {}  # no such model: no aliases
        for alias, version in aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        refs = [ModelVersionRef(mv.name, str(mv.version), mv.run_id, mv.source,
                                sorted(by_version.get(str(mv.version), [])), dict(mv.tags or {})) for mv in found]
        return sorted(refs, key=lambda r: int(r.version))

    # -- loading: the single path the server, controller and pipeline use --------------------
    def _download(self, ref: ModelVersionRef, dst: str, path: str = "") -> str:
        import mlflow.artifacts

        # Not models:/NAME/VERSION: MLflow resolves those through the *global* registry URI.
        location = self.client.get_model_version_download_uri(ref.name, str(ref.version))
        model_id = _logged_model_id(location)
        if model_id:
            location = self.client.get_logged_model(model_id).artifact_location
        # For a local workspace a missing file is a broken version, not an unavailable registry.
        with self._guard(translate=self._remote):
            return mlflow.artifacts.download_artifacts(artifact_uri=location.rstrip("/") + (f"/{path}" if path else ""),
                                                       dst_path=dst, tracking_uri=self.workspace.tracking_uri)

    def _refuse_unsafe(self, ref: ModelVersionRef, local: str) -> None:
        """Read the MLmodel file before anything is deserialised: pickle and cloudpickle run
        arbitrary code on load, so they need the explicit opt-in."""
        from mlflow.models import Model

        flavors = Model.load(local).flavors
        sk = flavors.get("sklearn")
        # an sklearn flavor without a format was written by old MLflow, which pickled
        fmt = (sk or {}).get("serialization_format", "pickle") if sk is not None else None
        loader = (flavors.get("python_function") or {}).get("loader_module")
        if fmt is None and loader == "mlflow.pyfunc.model":
            fmt = "cloudpickle"  # a custom python_model is a cloudpickle file
        if fmt is not None and fmt != "skops" and not self.allow_unsafe_pickle:
            raise UnsafeModelFormat(ref.name, ref.version, fmt)

    def _load_local(self, ref: ModelVersionRef, tmp: str) -> tuple[Any, str]:
        import mlflow.sklearn
        from mlflow.models import Model

        local = self._download(ref, tmp)
        self._refuse_unsafe(ref, local)
        flavors = Model.load(local).flavors
        if TORCH_FLAVOR in flavors:
            from loopml.train.torch_model import load_model  # pickle-free: weights_only + skops

            data = (flavors.get("python_function") or {}).get("data", "data")  # where MLflow copied it
            return load_model(os.path.join(local, data)), local
        return mlflow.sklearn.load_model(local), local

    def load_native(self, ref: ModelVersionRef) -> Any:
        """The version's scikit-learn object (or loopml's torch wrapper with the same predict /
        predict_proba / classes_); refuses pickle/cloudpickle files unless opted in."""
        with tempfile.TemporaryDirectory(prefix="loopml-load-") as tmp:
            return self._load_local(ref, tmp)[0]

    # -- files of a version, for the model runtimes and ``loopml optimize`` (#10) -------------
    def download(self, ref: ModelVersionRef, dst: str, path: str = "") -> str:
        """Download the version's model folder (or ``path`` inside it) into ``dst``; returns the local path."""
        return self._download(ref, dst, path)

    def download_run_artifacts(self, ref: ModelVersionRef, path: str, dst: str) -> str:
        """Download ``path`` from the artifacts of the run that produced the version."""
        import mlflow.artifacts

        if not ref.run_id:
            raise ModelCheckFailed(ref.name, str(ref.version), "it has no run to hold its artifacts")
        with self._guard(translate=self._remote):
            return mlflow.artifacts.download_artifacts(run_id=ref.run_id, artifact_path=path, dst_path=dst,
                                                       tracking_uri=self.workspace.tracking_uri)

    def log_run_artifacts(self, ref: ModelVersionRef, local_dir: str, path: str) -> None:
        """Log the files of ``local_dir`` under ``path`` in the artifacts of the version's run."""
        if not ref.run_id:
            raise RegistrationError(ref.name, f"version {ref.version} has no run to log artifacts to")
        self.client.log_artifacts(ref.run_id, local_dir, path)

    def set_version_tags(self, ref: ModelVersionRef, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_model_version_tag(ref.name, str(ref.version), k, str(v)[:4000])

    def delete_version_tag(self, ref: ModelVersionRef, key: str) -> None:
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # not there: nothing to delete
            self.client.delete_model_version_tag(ref.name, str(ref.version), key)

    def load_pyfunc(self, ref: ModelVersionRef) -> Any:
        """The version as an MLflow pyfunc model (any flavor); refuses pickle files unless opted in."""
        import mlflow.pyfunc

        with tempfile.TemporaryDirectory(prefix="loopml-pyfunc-") as tmp:
            local = self._download(ref, tmp)
            self._refuse_unsafe(ref, local)
            return mlflow.pyfunc.load_model(local)

    def check(self, ref: ModelVersionRef) -> None:
        """Load the version and predict on its logged input example (else a row built from its
        signature). A failure tags it ``loopml.status=broken`` and raises ModelCheckFailed.
        A pass is remembered for this Registry object, so repeated alias moves do not reload."""
        key = (ref.name, str(ref.version))
        if key in self._checked:
            return
        try:
            with tempfile.TemporaryDirectory(prefix="loopml-check-") as tmp:
                model, local = self._load_local(ref, tmp)
                example = _example_rows(local)
                out = model.predict(example)
                if len(out) != len(example):
                    raise ValueError(f"predict returned {len(out)} rows for {len(example)}")
        except (RegistryUnavailable, UnsafeModelFormat):
            raise  # says nothing about the version itself
        except Exception as exc:  # noqa: BLE001 - anything else: the version does not work
            reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            self.client.set_model_version_tag(ref.name, str(ref.version), STATUS_TAG, "broken")
            raise ModelCheckFailed(ref.name, str(ref.version), reason) from None
        self._checked.add(key)

    def input_example(self, ref: ModelVersionRef) -> Any:
        """The version's logged input example (a DataFrame for loopml's own models), or None
        when it has none. The server smoke-predicts on it before switching the version in."""
        from mlflow.models import Model

        with tempfile.TemporaryDirectory(prefix="loopml-example-") as tmp:
            meta = Model.load(self._download(ref, tmp, "MLmodel"))
            info = meta.saved_input_example_info
            if not info or not info.get("artifact_path"):
                return None
            self._download(ref, tmp, info["artifact_path"])
            return meta.load_input_example(tmp)

    def signature(self, ref: ModelVersionRef) -> dict[str, Any]:
        import json

        from mlflow.models import Model

        with tempfile.TemporaryDirectory(prefix="loopml-sig-") as tmp:
            sig = Model.load(self._download(ref, tmp, "MLmodel")).signature
        if sig is None:
            return {"inputs": [], "outputs": []}
        d = sig.to_dict()
        return {"inputs": json.loads(d["inputs"]) if d.get("inputs") else [],
                "outputs": json.loads(d["outputs"]) if d.get("outputs") else []}

    def reference_profile(self, ref: ModelVersionRef):
        """The training snapshot's reference profile of a version."""
        from loopml.data.profile import ReferenceProfile

        snap = ref.tags.get(SNAPSHOT_TAG)
        folder = self.workspace.snapshots / snap if snap else None
        if folder is not None and self.workspace.data_remote and not (folder / "profile.json").exists():
            from loopml.data.snapshot import load_snapshot  # fetched from LOOPML_DATA_URI (#11)
            from loopml.errors import SnapshotNotFound

            with contextlib.suppress(SnapshotNotFound):
                folder = load_snapshot(snap, self.workspace).path
        if folder is None or not (folder / "profile.json").exists():
            from loopml.errors import MonitorError

            raise MonitorError(f"model '{ref.name}' version {ref.version} has no reference profile "
                               f"(snapshot tag '{SNAPSHOT_TAG}' = {snap!r}); retrain it with 'loopml run'")
        return ReferenceProfile.load(folder)

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.client.get_run(run_id).data.metrics)

    # -- aliases ----------------------------------------------------------------------------
    def set_alias(self, name: str, alias: str, version: str, why: str, action: str = "set") -> audit.AliasChange:
        """Check ``version`` (see :meth:`check`), then point ``alias`` at it, tag the version and
        append the change to the audit log. Nothing changes when the check fails."""
        target = self.resolve(name, str(version))  # raises ModelNotFound before anything changes
        self.check(target)  # raises ModelCheckFailed before anything changes
        previous = self.try_resolve(name, alias)
        change = audit.AliasChange(ts=audit.now(), model=name, alias=alias, version=target.version,
                                   previous=previous.version if previous else None,
                                   who=audit.current_user(), why=why, action=action)
        client = self.client
        client.set_registered_model_alias(name, alias, target.version)
        client.set_model_version_tag(name, target.version, f"loopml.{alias}_since", f"{change.ts:.3f}")
        client.set_model_version_tag(name, target.version, f"loopml.{alias}_by", change.who)
        client.set_model_version_tag(name, target.version, f"loopml.{alias}_why", why[:4000])
        audit.append(self.workspace, change)
        return change

    def ensure_alias(self, name: str, alias: str, version: str, why: str) -> None:
        """Idempotent ``set_alias`` for a resumed controller: move the alias if it is elsewhere,
        and write the audit line if a crash between the move and its record lost it."""
        current = self.try_resolve(name, alias)
        if current is None or current.version != str(version):
            self.set_alias(name, alias, str(version), why)
            return
        recorded = [c for c in audit.read(self.workspace, name) if c.alias == alias]
        if not recorded or recorded[-1].version != str(version):
            audit.append(self.workspace, audit.AliasChange(
                ts=audit.now(), model=name, alias=alias, version=str(version),
                previous=recorded[-1].version if recorded else None, who=audit.current_user(),
                why=why + " (recorded on resume after a crash)", action="set"))

    def promote(self, name: str, version: str, why: str = "manual promotion") -> audit.AliasChange:
        """Make ``version`` champion; a promotion by hand also lifts a block (see :meth:`block`)."""
        change = self.set_alias(name, CHAMPION, version, why)
        if self.resolve(name, change.version).blocked:
            self.unblock(name, change.version)
        return change

    def rollback(self, name: str, why: str = "manual rollback") -> audit.AliasChange:
        """Point ``champion`` back at the version that held it before the current one, and block
        the version rolled back from until it is promoted by hand."""
        current = self.resolve(name, CHAMPION)
        history = [c for c in audit.read(self.workspace, name) if c.alias == CHAMPION]
        seen_current = False
        for change in reversed(history):
            if not seen_current:
                seen_current = change.version == current.version
                continue
            if change.version and change.version != current.version:
                back = self.set_alias(name, CHAMPION, change.version, why, action="rollback")
                self.block(name, current.version, f"rolled back to version {back.version}: {why}")
                return back
        raise RegistrationError(name, f"no earlier champion to roll back to (champion is version {current.version})")

    def block(self, name: str, version: str, why: str) -> None:
        """Keep ``version`` from being rolled out again automatically (tag ``loopml.blocked``),
        audited; only :meth:`promote` (by hand) or :meth:`unblock` lifts it."""
        self.client.set_model_version_tag(name, str(version), BLOCKED_TAG, why[:4000] or "blocked")
        audit.record_event(self.workspace, name, "block", why, version=str(version), alias="blocked")

    def unblock(self, name: str, version: str) -> None:
        self.client.delete_model_version_tag(name, str(version), BLOCKED_TAG)
        audit.record_event(self.workspace, name, "unblock", "promoted by hand", version=str(version),
                           alias="blocked")

    def history(self, name: str) -> list[audit.AliasChange]:
        return audit.read(self.workspace, name)


def _example_rows(local: str) -> Any:
    """The rows a version is checked with: its logged input example, else one row synthesised
    from its signature; with neither there is nothing to check it with, which fails the check."""
    import pandas as pd
    from mlflow.models import Model

    meta = Model.load(local)
    if meta.saved_input_example_info is not None:
        example = meta.load_input_example(local)
        if example is not None:
            return example
    inputs = meta.signature.inputs.to_dict() if meta.signature is not None and meta.signature.inputs else []
    if not inputs or any("name" not in c for c in inputs):
        raise ValueError("no input example and no named-column signature to check it with")
    fill = {"double": 0.0, "float": 0.0, "long": 0, "integer": 0, "boolean": False, "string": "",
            "datetime": pd.Timestamp(0)}
    return pd.DataFrame([{c["name"]: fill.get(str(c.get("type")), 0.0) for c in inputs}])
