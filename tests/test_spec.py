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
