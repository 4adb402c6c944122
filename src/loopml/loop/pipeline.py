"""The pipeline: snapshot -> validate -> train -> evaluate -> gate/register.

Training, evaluation and registration are cached by their inputs' content (the
snapshot id, the spec sections that shape the model, loopml's version): running
again with nothing changed returns the earlier result and does no work. A failing
step stops the run, marks its MLflow run FAILED and leaves earlier outputs intact.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

import loopml
from loopml.config import Workspace
from loopml.fileio import atomic_write_json
from loopml.errors import ContractViolation, LoopmlError, PipelineStepFailed
from loopml.spec import ProjectSpec

StepCallback = Callable[[str, str], None]  # (step, message)

STEPS = ("snapshot", "validate", "train", "evaluate", "register")


@dataclass
class PipelineResult:
    model: str
    snapshot_id: str
    cached: bool = False
    run_id: str | None = None
    version: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    champion_version: str | None = None
    champion_metrics: dict[str, float] | None = None
    gate_passed: bool = False
    gate_reasons: list[str] = field(default_factory=list)
    promoted: bool = False
    slices: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _noop(step: str, message: str) -> None:
    pass


def cache_key(spec: ProjectSpec, snapshot_id: str) -> str:
    shaping = {
        "snapshot": snapshot_id,
        "task": spec.task,
        "data": spec.data.model_dump(exclude={"source"}),
        "model": spec.model.model_dump(),
        "training": spec.training.model_dump(exclude={"ray_address", "max_failures"}),
        "evaluation": spec.evaluation.model_dump(),
        "loopml": loopml.__version__,
    }
    return hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:20]


def git_commit(folder: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run_pipeline(spec: ProjectSpec, workspace: Workspace, *, project_dir: Path = Path("."),
                 source: str | None = None, frame: pd.DataFrame | None = None,
                 on_step: StepCallback = _noop, force: bool = False, auto_promote: bool = True,
                 reason: str = "pipeline") -> PipelineResult:
    """Run the whole pipeline for a project; ``source``/``frame`` override the spec's data source."""
    workspace.init()
    snap, df = _snapshot_and_validate(spec, workspace, project_dir, source, frame, on_step)
    entry = f"{spec.name}-{cache_key(spec, snap.id)}"
    cached = None if force else _cached(workspace, entry)
    if cached is not None:
        from loopml.registry.client import Registry

        if cached.version and Registry(workspace).try_resolve(spec.name, cached.version):
            cached.cached = True
            on_step("register", f"nothing changed since run {cached.run_id}: version {cached.version} is up to date")
            return cached

    result = _train_evaluate_register(spec, workspace, snap, df, project_dir, on_step, auto_promote, reason)
    _remember(workspace, entry, result)
    return result


# The cache: one small JSON per (spec, snapshot) key, in the workspace's cache folder, or with
# LOOPML_HOME on object storage under <home>/cache, so every machine of the team skips a run
# another already made (published whole: a reader sees the entry or nothing, never part of it).

def _cached(workspace: Workspace, entry: str) -> "PipelineResult | None":
    if workspace.remote_home:
        from loopml.data import remote
        from loopml.errors import HomeStoreUnavailable

        home = remote.store(f"{workspace.remote_home}/cache")
        with remote.reachable(home.url, HomeStoreUnavailable):  # unreachable: fail closed, not "no cache"
            if not home.published(entry):
                return None
            return PipelineResult(**json.loads(home.read(entry, "result.json")))
    path = workspace.cache / f"{entry}.json"
    return PipelineResult(**json.loads(path.read_text())) if path.exists() else None


def _remember(workspace: Workspace, entry: str, result: "PipelineResult") -> None:
    if workspace.remote_home:
        from loopml.data import remote
        from loopml.errors import HomeStoreUnavailable

        home = remote.store(f"{workspace.remote_home}/cache")
        with remote.reachable(home.url, HomeStoreUnavailable):
            home.publish(entry, {"result.json": json.dumps(result.to_dict()).encode()})
        return
    atomic_write_json(workspace.cache / f"{entry}.json", result.to_dict())


def _snapshot_and_validate(spec, workspace, project_dir, source, frame, on_step):
    from loopml.data.contract import contract_for, validate_frame
    from loopml.data.snapshot import snapshot_dataset

    src = source or spec.data.source
    on_step("snapshot", f"reading {src}")
    snap = snapshot_dataset(src, workspace, base_dir=project_dir, df=frame)
    on_step("snapshot", f"{snap.id}: {snap.row_count} rows")
    df = snap.load_frame()
    on_step("validate", "checking the data contract")
    report = validate_frame(df, contract_for(spec))
    if not report.passed:
        first = "; ".join(v.message for v in report.violations[:3])
        raise ContractViolation(f"data contract failed for snapshot {snap.id}: {len(report.violations)} violation(s) "
                                f"({first}); see 'loopml data validate {snap.id}'")
    on_step("validate", "contract passed")
    return snap, df


def tune_pipeline(spec: ProjectSpec, workspace: Workspace, *, project_dir: Path = Path("."),
                  on_step: StepCallback = _noop, on_trials: Callable[[list], None] = lambda rows: None,
                  auto_promote: bool = True) -> tuple[Any, PipelineResult | None]:
    """``tuning:`` on Ray Tune over the training split (the gate's holdout stays unseen), then the
    best configuration retrained on the whole training split through the same evaluate -> gate
    -> register path (:func:`run_pipeline`). Returns (tuning outcome, pipeline result or None
    when no trial produced the metric)."""
    from loopml.registry.client import SNAPSHOT_TAG, Registry
    from loopml.train.trainer import split_frame
    from loopml.train.tune import run_tuning
    from loopml.train.tune_space import tuned_spec

    workspace.init()
    snap, df = _snapshot_and_validate(spec, workspace, project_dir, None, None, on_step)
    split = split_frame(spec, df)
    registry = Registry(workspace)
    with registry.run(spec.name, run_name=f"{spec.name}-tune-{snap.id}") as parent:
        parent.set_tags({SNAPSHOT_TAG: snap.id, "loopml.reason": "tune"})
        on_step("tune", f"{spec.tuning.num_samples} trials on Ray Tune over {len(split.train)} training rows")
        outcome = run_tuning(spec, split.train, workspace, registry, parent, on_trials)
        if outcome.best is None:
            return outcome, None
        on_step("tune", f"best {outcome.metric} {outcome.best.metric:.4f} with {outcome.best.config}; "
                        "retraining it on the whole training split")
        best_spec = tuned_spec(spec, outcome.best.config)
        result = run_pipeline(best_spec, workspace, project_dir=project_dir, on_step=on_step,
                              auto_promote=auto_promote, reason=f"tuned (run {parent.run_id})")
        parent.set_tags({"loopml.tuned_version": result.version or "", "loopml.tuned_run": result.run_id or ""})
    return outcome, result


def _train_evaluate_register(spec, workspace, snap, df, project_dir, on_step, auto_promote, reason) -> PipelineResult:
    from loopml.evaluate.gate import decide
    from loopml.evaluate.metrics import confusion, slice_metrics, task_metrics
    from loopml.registry.client import CHALLENGER, CHAMPION, SNAPSHOT_TAG, Registry
    from loopml.train.trainer import coerce_features, split_frame, train_model

    registry = Registry(workspace)
    result = PipelineResult(model=spec.name, snapshot_id=snap.id)
    split = split_frame(spec, df)
    step = "train"
    with registry.run(spec.name, run_name=f"{spec.name}-{snap.id}") as run:
        try:
            result.run_id = run.run_id
            commit = git_commit(project_dir)
            run.set_tags({SNAPSHOT_TAG: snap.id, "loopml.source": snap.source, "loopml.reason": reason,
                          **({"loopml.git_commit": commit} if commit else {})})
            run.log_dataset(split.train.head(1000), source=snap.source, name=snap.id, context="training")
            on_step("train", f"fitting {spec.model.ref} on {len(split.train)} rows"
                    + (f" on Ray ({spec.training.workers} workers)" if spec.training.backend == "ray" else ""))
            trained = train_model(spec, split.train, run, workspace=workspace)
            run.log_params({**trained.params, "estimator": spec.model.ref, "train_rows": trained.train_rows,
                            "features": ",".join(trained.features)})

            step = "evaluate"
            on_step("evaluate", f"holdout of {len(split.test)} rows")
            X_test = coerce_features(split.test[trained.features], trained.numeric, trained.categorical)
            y_test = split.test[spec.data.target]
            result.metrics = task_metrics(spec.task, trained.model, X_test, y_test)
            run.log_metrics(result.metrics)
            if spec.task == "classification":
                run.log_dict(confusion(trained.model, X_test, y_test), "confusion_matrix.json")
            result.slices = slice_metrics(spec.task, trained.model, X_test, y_test, split.test, spec.evaluation.slices)
            if result.slices:
                run.log_dict(result.slices, "slice_metrics.json")

            champion = registry.try_resolve(spec.name, CHAMPION)
            champ_slices = None
            if champion is not None:
                champ_model = registry.load_native(champion)
                result.champion_version = champion.version
                result.champion_metrics = task_metrics(spec.task, champ_model, X_test, y_test)
                champ_slices = slice_metrics(spec.task, champ_model, X_test, y_test, split.test, spec.evaluation.slices)
                run.log_metrics(result.champion_metrics, prefix="champion_")
            decision = decide(result.metrics, result.champion_metrics, spec.evaluation, result.slices, champ_slices)
            result.gate_passed, result.gate_reasons = decision.passed, decision.reasons
            run.log_dict(decision.to_dict(), "gate.json")

            step = "register"
            on_step("register", "logging and registering the model")
            uri = run.log_model(trained.model, X_test.head(5), flavor=trained.flavor)
            ref = registry.register(uri, spec.name, run.run_id, {SNAPSHOT_TAG: snap.id, "loopml.gate_passed": decision.passed})
            result.version = ref.version
            if spec.serving.onnx == "auto":  # before any alias moves, so servers load it as adopted
                from loopml.registry.optimize import optimize_quietly
                optimize_quietly(registry, ref, on_step, quantize=spec.serving.onnx_quantize, holdout=(X_test, y_test),
                                 quantize_tolerance=spec.serving.quantize_tolerance,
                                 metric=spec.evaluation.primary_metric)
            why = f"{reason}; gate {'passed' if decision.passed else 'failed'}: {_headline(decision.reasons)}"
            registry.set_alias(spec.name, CHALLENGER, ref.version, why)
            if decision.passed and auto_promote:
                registry.promote(spec.name, ref.version, why)
                result.promoted = True
            on_step("register", f"version {ref.version}: " + ("promoted to champion" if result.promoted else "challenger (not promoted)"))
        except LoopmlError:
            raise
        except Exception as exc:  # noqa: BLE001 - any other failure names its step
            raise PipelineStepFailed(step, f"{type(exc).__name__}: {exc}") from exc
    return result


def _headline(reasons: list[str]) -> str:
    """The gate's deciding line: the primary-metric comparison, else the first reason."""
    for r in reasons:
        if " vs champion " in r:
            return r
    return reasons[-1] if reasons else ""
