"""The only place that talks to MLflow: tracking runs, model versions and aliases.

Aliases are ``champion`` and ``challenger``. Every alias change goes through
:meth:`Registry.set_alias`, which tags the version in MLflow and appends a line to
the workspace's audit log, so ``loopml history`` can say who changed what, when and why.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

from loopml.config import Workspace
from loopml.errors import ModelNotFound, RegistrationError
from loopml.registry import audit

CHAMPION = "champion"
CHALLENGER = "challenger"
SNAPSHOT_TAG = "loopml.snapshot_id"


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


def _quiet_mlflow() -> None:
    import warnings

    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"mlflow\..*")
    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)


class TrackedRun:
    """One MLflow run, opened by :meth:`Registry.run`."""

    def __init__(self, mlflow: Any, run: Any) -> None:
        self._mlflow = mlflow
        self.run_id: str = run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        flat = {k: (str(v)[:500]) for k, v in params.items()}
        self._mlflow.log_params(flat)

    def log_metrics(self, metrics: dict[str, float], prefix: str = "") -> None:
        import math

        self._mlflow.log_metrics({prefix + k: float(v) for k, v in metrics.items() if v is not None and not math.isnan(v)})

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_dict(self, data: dict, name: str) -> None:
        self._mlflow.log_dict(data, name)

    def log_dataset(self, df: Any, *, source: str, name: str, context: str) -> None:
        from mlflow.data.pandas_dataset import from_pandas

        ds = from_pandas(df, source=source, name=name)
        self._mlflow.log_input(ds, context=context)

    def log_model(self, model: Any, input_example: Any) -> str:
        from mlflow.models import infer_signature

        signature = infer_signature(input_example, _predict_sample(model, input_example))
        info = self._mlflow.sklearn.log_model(model, name="model", signature=signature,
                                              input_example=input_example,
                                              skops_trusted_types=_own_types(model))
        return info.model_uri


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
    """MLflow tracking + registry for one workspace. Constructing it does no I/O."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._mlflow: Any = None

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def mlflow(self) -> Any:
        if self._mlflow is None:
            _quiet_mlflow()
            import mlflow

            _quiet_mlflow()  # again: importing mlflow configures its own loggers
            self.workspace.init()
            mlflow.set_tracking_uri(self.workspace.tracking_uri)
            mlflow.set_registry_uri(self.workspace.tracking_uri)
            self._mlflow = mlflow
        return self._mlflow

    @property
    def client(self) -> Any:
        return self.mlflow.MlflowClient(self.workspace.tracking_uri, self.workspace.tracking_uri)

    def experiment_id(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        # A tracking *server* decides where artifacts go (mlflow-artifacts:/); a database URI
        # (sqlite, postgresql, ...) would default to ./mlruns, so the workspace holds them.
        served = self.workspace.tracking_uri.startswith(("http://", "https://"))
        location = None if served else self.workspace.artifacts.as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    @contextlib.contextmanager
    def run(self, experiment: str, run_name: str | None = None) -> Iterator[TrackedRun]:
        """An MLflow run marked FINISHED on success and FAILED when the block raises."""
        mlflow = self.mlflow
        exp_id = self.experiment_id(experiment)
        run = mlflow.start_run(experiment_id=exp_id, run_name=run_name)
        try:
            yield TrackedRun(mlflow, run)
        except BaseException:
            mlflow.end_run(status="FAILED")
            raise
        mlflow.end_run(status="FINISHED")

    # -- versions ---------------------------------------------------------------------------
    def register(self, model_uri: str, name: str, run_id: str, tags: dict[str, Any]) -> ModelVersionRef:
        """Register a logged model as a new version; check it loads before returning it."""
        client = self.client
        try:
            client.get_registered_model(name)
        except Exception:  # noqa: BLE001 - MlflowException when absent
            client.create_registered_model(name)
        try:
            mv = client.create_model_version(name, model_uri, run_id=run_id,
                                             tags={k: str(v) for k, v in tags.items()},
                                             model_id=_logged_model_id(model_uri))
        except Exception as exc:  # noqa: BLE001
            raise RegistrationError(name, str(exc).splitlines()[0]) from None
        ref = self.resolve(name, str(mv.version))
        try:
            self.load_native(ref)
        except Exception as exc:  # noqa: BLE001 - a version that cannot load never gets an alias
            client.set_model_version_tag(name, ref.version, "loopml.status", "broken")
            raise RegistrationError(name, f"version {ref.version} does not load: {exc}") from None
        return ref

    def resolve(self, name: str, ref: str = CHAMPION) -> ModelVersionRef:
        client = self.client
        try:
            if ref.isdigit():
                mv = client.get_model_version(name, ref)
            else:
                mv = client.get_model_version_by_alias(name, ref)
        except Exception:  # noqa: BLE001 - RESOURCE_DOES_NOT_EXIST or invalid name
            raise ModelNotFound(name, ref) from None
        return ModelVersionRef(name=mv.name, version=str(mv.version), run_id=mv.run_id, source=mv.source,
                               aliases=list(getattr(mv, "aliases", []) or []), tags=dict(mv.tags or {}))

    def try_resolve(self, name: str, ref: str = CHAMPION) -> ModelVersionRef | None:
        try:
            return self.resolve(name, ref)
        except ModelNotFound:
            return None

    def versions(self, name: str) -> list[ModelVersionRef]:
        client = self.client
        found = client.search_model_versions(f"name = '{name}'")
        try:
            by_version: dict[str, list[str]] = {}
            for alias, version in (client.get_registered_model(name).aliases or {}).items():
                by_version.setdefault(str(version), []).append(alias)
        except Exception:  # noqa: BLE001 - no such model: no aliases
            by_version = {}
        refs = [ModelVersionRef(mv.name, str(mv.version), mv.run_id, mv.source,
                                sorted(by_version.get(str(mv.version), [])), dict(mv.tags or {})) for mv in found]
        return sorted(refs, key=lambda r: int(r.version))

    def load_native(self, ref: ModelVersionRef) -> Any:
        return self.mlflow.sklearn.load_model(ref.uri)

    def signature(self, ref: ModelVersionRef) -> dict[str, Any]:
        info = self.mlflow.models.get_model_info(ref.uri)
        sig = info.signature
        if sig is None:
            return {"inputs": [], "outputs": []}
        d = sig.to_dict()
        import json

        return {"inputs": json.loads(d["inputs"]) if d.get("inputs") else [],
                "outputs": json.loads(d["outputs"]) if d.get("outputs") else []}

    def reference_profile(self, ref: ModelVersionRef):
        """The training snapshot's reference profile of a version."""
        from loopml.data.profile import ReferenceProfile

        snap = ref.tags.get(SNAPSHOT_TAG)
        folder = self.workspace.snapshots / snap if snap else None
        if folder is None or not (folder / "profile.json").exists():
            from loopml.errors import MonitorError

            raise MonitorError(f"model '{ref.name}' version {ref.version} has no reference profile "
                               f"(snapshot tag '{SNAPSHOT_TAG}' = {snap!r}); retrain it with 'loopml run'")
        return ReferenceProfile.load(folder)

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.client.get_run(run_id).data.metrics)

    # -- aliases ----------------------------------------------------------------------------
    def set_alias(self, name: str, alias: str, version: str, why: str, action: str = "set") -> audit.AliasChange:
        """Point ``alias`` at ``version``, tag the version and append the change to the audit log."""
        target = self.resolve(name, str(version))  # raises ModelNotFound before anything changes
        previous = self.try_resolve(name, alias)
        change = audit.AliasChange(ts=audit.now(), model=name, alias=alias, version=target.version,
                                   previous=previous.version if previous else None,
                                   who=audit.current_user(), why=why, action=action)
        client = self.client
        client.set_registered_model_alias(name, alias, target.version)
        client.set_model_version_tag(name, target.version, f"loopml.{alias}_since", f"{change.ts:.3f}")
        client.set_model_version_tag(name, target.version, f"loopml.{alias}_by", change.who)
        client.set_model_version_tag(name, target.version, f"loopml.{alias}_why", why[:4000])
        audit.append(self.workspace.audit_log, change)
        return change

    def ensure_alias(self, name: str, alias: str, version: str, why: str) -> None:
        """Idempotent ``set_alias`` for a resumed controller: move the alias if it is elsewhere,
        and write the audit line if a crash between the move and its record lost it."""
        current = self.try_resolve(name, alias)
        if current is None or current.version != str(version):
            self.set_alias(name, alias, str(version), why)
            return
        recorded = [c for c in audit.read(self.workspace.audit_log, name) if c.alias == alias]
        if not recorded or recorded[-1].version != str(version):
            audit.append(self.workspace.audit_log, audit.AliasChange(
                ts=audit.now(), model=name, alias=alias, version=str(version),
                previous=recorded[-1].version if recorded else None, who=audit.current_user(),
                why=why + " (recorded on resume after a crash)", action="set"))

    def promote(self, name: str, version: str, why: str = "manual promotion") -> audit.AliasChange:
        return self.set_alias(name, CHAMPION, version, why)

    def rollback(self, name: str, why: str = "manual rollback") -> audit.AliasChange:
        """Point ``champion`` back at the version that held it before the current one."""
        current = self.resolve(name, CHAMPION)
        history = [c for c in audit.read(self.workspace.audit_log, name) if c.alias == CHAMPION]
        seen_current = False
        for change in reversed(history):
            if not seen_current:
                seen_current = change.version == current.version
                continue
            if change.version and change.version != current.version:
                return self.set_alias(name, CHAMPION, change.version, why, action="rollback")
        raise RegistrationError(name, f"no earlier champion to roll back to (champion is version {current.version})")

    def history(self, name: str) -> list[audit.AliasChange]:
        return audit.read(self.workspace.audit_log, name)
