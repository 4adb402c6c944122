import pytest
import yaml

from loopml.demo.project import SPEC_TEMPLATE
from loopml.errors import EstimatorImportError, SpecError
from loopml.spec import load_spec, parse_spec


def _spec(**over):
    raw = yaml.safe_load(yaml.safe_dump(SPEC_TEMPLATE))
    for dotted, value in over.items():
        node = raw
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return raw


def test_template_parses_and_defaults():
    spec = parse_spec(_spec())
    assert spec.name == "fraud" and spec.task == "classification"
    assert spec.evaluation.primary_metric == "roc_auc"
    cols = ["transaction_id", "event_time", "amount", "is_fraud"]
    assert spec.feature_columns(cols) == ["amount"]


def test_wrong_param_type_names_the_field():
    with pytest.raises(SpecError) as e:
        parse_spec(_spec(model__params__max_depth="ten"))
    msg = str(e.value)
    assert msg.startswith("loopml.yaml: model.params.max_depth:")
    assert "'ten'" in msg


def test_unknown_param_suggests_close_name():
    with pytest.raises(SpecError, match=r"model.params.max_dept: .*did you mean 'max_depth'"):
        parse_spec(_spec(model__params__max_dept=3))


def test_unknown_key_and_typo_hint():
    raw = _spec()
    raw["evalution"] = {}
    with pytest.raises(SpecError, match=r"evalution: unknown key; did you mean 'evaluation'"):
        parse_spec(raw)


def test_wrong_type_and_missing_field():
    raw = _spec(serving__port="http")
    del raw["task"]
    with pytest.raises(SpecError) as e:
        parse_spec(raw)
    assert "serving.port: expected integer, got 'http'" in str(e.value)
    assert "task: required field missing" in str(e.value)


def test_unknown_estimator_path():
    with pytest.raises(EstimatorImportError, match="sklearn.linear_model.NoSuchModel"):
        parse_spec(_spec(model__estimator="sklearn.linear_model.NoSuchModel", model__params={}))
    with pytest.raises(EstimatorImportError, match="no module 'nosuchpkg'"):
        parse_spec(_spec(model__estimator="nosuchpkg.Model", model__params={}))


def test_load_spec_missing_and_bad_yaml(tmp_path):
    with pytest.raises(SpecError, match="file not found"):
        load_spec(tmp_path)
    (tmp_path / "loopml.yaml").write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="line .*not valid YAML"):
        load_spec(tmp_path)
    (tmp_path / "loopml.yaml").write_text("- a list\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(tmp_path)


# --- fail closed (#8): settings that cannot work are errors at load -----------------------


def _problem(**over) -> str:
    with pytest.raises(SpecError) as e:
        parse_spec(_spec(**over))
    msg = str(e.value)
    assert "\n" not in msg and e.value.exit_code == 2
    return msg


def _regression(**evaluation):
    return _spec(task="regression", model__estimator="sklearn.linear_model.Ridge", model__params={},
                 evaluation=evaluation)


def test_monitoring_features_are_typed():
    spec = parse_spec(_spec(monitoring__features={"amount": {"method": "psi", "threshold": 0.3},
                                                  "hour": {"skip": True}}))
    amount = spec.monitoring.features["amount"]
    assert amount.method == "psi" and amount.threshold == 0.3 and not amount.skip
    assert spec.monitoring.features["hour"].skip and spec.monitoring.features["hour"].method == "auto"


def test_monitoring_feature_key_typo_is_named_with_a_hint():
    msg = _problem(monitoring__features={"amount": {"methd": "ks"}})
    assert "monitoring.features.amount.methd: unknown key; did you mean 'method'?" in msg


def test_monitoring_feature_unknown_method_names_the_valid_ones():
    msg = _problem(monitoring__features={"amount": {"method": "kss"}})
    assert "monitoring.features.amount.method:" in msg and "'kss'" in msg
    for method in ("auto", "ks", "chi2", "psi", "wasserstein", "jensenshannon"):
        assert method in msg
    assert "did you mean 'ks'?" in msg


def test_monitoring_threshold_on_a_test_method_is_an_error():
    msg = _problem(monitoring__features={"amount": {"method": "ks", "threshold": 0.1}})
    assert "monitoring.features.amount.threshold:" in msg and "fdr" in msg


def test_monitoring_feature_not_among_declared_features():
    msg = _problem(data__features=["amount", "hour"], monitoring__features={"amout": {"skip": True}})
    assert "monitoring.features.amout:" in msg and "did you mean 'amount'?" in msg


def test_rollout_without_steps_is_an_error():
    assert "rollout.steps: " in _problem(rollout__steps=[])


def test_canary_weight_zero_and_shadow_weight_are_errors():
    msg = _problem(rollout__steps=[{"kind": "shadow"}, {"kind": "canary", "weight": 0}])
    assert "rollout.steps.1.weight:" in msg and "canary" in msg
    msg = _problem(rollout__steps=[{"kind": "canary"}])
    assert "rollout.steps.0.weight:" in msg
    msg = _problem(rollout__steps=[{"kind": "shadow", "weight": 0.5}])
    assert "rollout.steps.0.weight:" in msg and "shadow" in msg


def test_primary_metric_typo_suggests_the_metric():
    msg = _problem(evaluation__primary_metric="accuracyy")
    assert "evaluation.primary_metric: 'accuracyy'" in msg and "did you mean 'accuracy'?" in msg


def test_primary_metric_of_another_task_is_an_error():
    with pytest.raises(SpecError) as e:
        parse_spec(_regression(primary_metric="roc_auc"))
    msg = str(e.value)
    assert "evaluation.primary_metric: 'roc_auc'" in msg and "regression" in msg
    assert "rmse" in msg and "mae" in msg and "r2" in msg


def test_regression_defaults_to_rmse_and_accepts_its_metrics():
    spec = parse_spec(_regression(guards={"mae": 0.1}, minimum={"r2": 0.5}))
    assert spec.evaluation.primary_metric == "rmse"


def test_guard_and_minimum_metrics_must_be_computed_by_the_task():
    msg = _problem(evaluation__guards={"logloss": 0.02})
    assert "evaluation.guards.logloss:" in msg and "did you mean 'log_loss'?" in msg
    msg = _problem(evaluation__minimum={"rmse": 1.0})
    assert "evaluation.minimum.rmse:" in msg and "classification" in msg


def test_slice_guards_check_syntax_column_and_metric():
    ok = parse_spec(_spec(evaluation__guards={"slice:merchant_category=grocery:recall": 0.05}))
    assert "slice:merchant_category=grocery:recall" in ok.evaluation.guards
    msg = _problem(evaluation__guards={"slice:merchant_category=grocery:recal": 0.05})
    assert "evaluation.guards.slice:merchant_category=grocery:recal:" in msg and "did you mean 'recall'?" in msg
    msg = _problem(evaluation__guards={"slice:merchant_category:recall": 0.05})
    assert "slice:<column>=<value>:<metric>" in msg
    msg = _problem(evaluation__guards={"slice:country=BR:recall": 0.05})
    assert "'country'" in msg and "evaluation.slices" in msg
