import pandas as pd
import pytest

from loopml.errors import ContractViolation, PipelineStepFailed
from loopml.loop.pipeline import run_pipeline
from loopml.registry.client import Registry
from loopml.spec import load_spec


def test_first_run_promotes_then_cache_does_no_work(workspace, project):
    spec = load_spec(project)
    steps = []
    r1 = run_pipeline(spec, workspace, project_dir=project, on_step=lambda s, m: steps.append(s))
    assert r1.version == "1" and r1.promoted and not r1.cached
    assert {"snapshot", "validate", "train", "evaluate", "register"} <= set(steps)
    assert r1.metrics["roc_auc"] > 0.6 and "merchant_category" in r1.slices
    r2 = run_pipeline(spec, workspace, project_dir=project)
    assert r2.cached and r2.version == "1" and r2.run_id == r1.run_id
    assert len(Registry(workspace).versions(spec.name)) == 1
    run = Registry(workspace).client.get_run(r1.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["loopml.snapshot_id"] == r1.snapshot_id
    assert run.data.params["estimator"] == spec.model.estimator


def test_retrain_that_does_not_beat_champion_is_only_challenger(workspace, project):
    spec = load_spec(project)
    run_pipeline(spec, workspace, project_dir=project)
    spec.evaluation.margin = 0.5  # impossible to beat by this much
    r = run_pipeline(spec, workspace, project_dir=project, force=True)
    assert r.version == "2" and not r.gate_passed and not r.promoted
    reg = Registry(workspace)
    assert reg.resolve(spec.name).version == "1"
    assert reg.resolve(spec.name, "challenger").version == "2"


def test_contract_failure_stops_before_training(workspace, project):
    df = pd.read_csv(project / "data" / "transactions.csv")
    df.loc[:5, "hour"] = 99
    df.to_csv(project / "data" / "transactions.csv", index=False)
    with pytest.raises(ContractViolation) as e:
        run_pipeline(load_spec(project), workspace, project_dir=project)
    assert e.value.exit_code == 1
    assert Registry(workspace).try_resolve("fraud") is None


def test_failing_step_marks_run_failed_and_keeps_champion(workspace, project, monkeypatch):
    spec = load_spec(project)
    run_pipeline(spec, workspace, project_dir=project)
    import loopml.evaluate.metrics as metrics

    def boom(*a, **k):
        raise RuntimeError("evaluation exploded")

    monkeypatch.setattr(metrics, "task_metrics", boom)
    with pytest.raises(PipelineStepFailed, match="step 'evaluate' failed: RuntimeError: evaluation exploded"):
        run_pipeline(spec, workspace, project_dir=project, force=True)
    reg = Registry(workspace)
    assert reg.resolve(spec.name).version == "1" and len(reg.versions(spec.name)) == 1
    runs = reg.client.search_runs([reg.experiment_id(spec.name)], order_by=["attributes.start_time DESC"])
    assert runs[0].info.status == "FAILED"


def test_missing_feature_column_is_named(workspace, project):
    spec = load_spec(project)
    spec.data.features = ["amount", "no_such_column"]
    with pytest.raises(ContractViolation, match="no_such_column"):
        run_pipeline(spec, workspace, project_dir=project)
