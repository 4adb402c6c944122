from loopml.evaluate.gate import decide
from loopml.spec import EvaluationSpec


def test_no_champion_uses_minimum():
    spec = EvaluationSpec(primary_metric="roc_auc", minimum={"roc_auc": 0.7})
    assert decide({"roc_auc": 0.75}, None, spec).passed
    assert not decide({"roc_auc": 0.65}, None, spec).passed


def test_margin_and_direction():
    spec = EvaluationSpec(primary_metric="roc_auc", margin=0.02)
    assert decide({"roc_auc": 0.83}, {"roc_auc": 0.80}, spec).passed
    assert not decide({"roc_auc": 0.81}, {"roc_auc": 0.80}, spec).passed
    rmse = EvaluationSpec(primary_metric="rmse", margin=0.1)
    assert decide({"rmse": 1.0}, {"rmse": 1.2}, rmse).passed
    assert not decide({"rmse": 1.2}, {"rmse": 1.0}, rmse).passed


def test_guard_blocks_promotion():
    spec = EvaluationSpec(primary_metric="roc_auc", guards={"log_loss": 0.01})
    d = decide({"roc_auc": 0.9, "log_loss": 0.30}, {"roc_auc": 0.8, "log_loss": 0.20}, spec)
    assert not d.passed
    assert any("guard log_loss" in r and "FAILS" in r for r in d.reasons)


def test_slice_guard():
    spec = EvaluationSpec(primary_metric="roc_auc", guards={"slice:country=BR:recall": 0.05})
    cand_s = {"country": {"BR": {"recall": 0.5}}}
    champ_s = {"country": {"BR": {"recall": 0.7}}}
    d = decide({"roc_auc": 0.9}, {"roc_auc": 0.8}, spec, cand_s, champ_s)
    assert not d.passed
    d2 = decide({"roc_auc": 0.9}, {"roc_auc": 0.8}, spec, champ_s, champ_s)
    assert d2.passed


def test_missing_primary_fails():
    d = decide({"accuracy": 0.9}, None, EvaluationSpec(primary_metric="roc_auc"))
    assert not d.passed and "not computed" in d.reasons[0]


def test_guard_metric_missing_for_either_model_fails_the_gate():
    spec = EvaluationSpec(primary_metric="roc_auc", guards={"log_loss": 0.01})
    # the challenger has no probabilities (no log_loss): the guard cannot be checked
    d = decide({"roc_auc": 0.9}, {"roc_auc": 0.8, "log_loss": 0.2}, spec)
    assert not d.passed
    assert any("guard log_loss" in r and "candidate" in r for r in d.reasons)
    d = decide({"roc_auc": 0.9, "log_loss": 0.2}, {"roc_auc": 0.8}, spec)
    assert not d.passed
    assert any("guard log_loss" in r and "champion" in r for r in d.reasons)
    nan = decide({"roc_auc": 0.9, "log_loss": float("nan")}, {"roc_auc": 0.8, "log_loss": 0.2}, spec)
    assert not nan.passed


def test_slice_guard_that_matched_nothing_fails_the_gate():
    spec = EvaluationSpec(primary_metric="roc_auc", guards={"slice:country=XX:recall": 0.05})
    slices = {"country": {"BR": {"recall": 0.7}}}
    d = decide({"roc_auc": 0.9}, {"roc_auc": 0.8}, spec, slices, slices)
    assert not d.passed
    assert any("slice:country=XX:recall" in r and "FAILS" in r for r in d.reasons)
    assert not any("skipped" in r for r in d.reasons)


def test_guard_message_says_better_when_the_challenger_is_better():
    spec = EvaluationSpec(primary_metric="roc_auc", guards={"log_loss": 0.01})
    d = decide({"roc_auc": 0.9, "log_loss": 0.15}, {"roc_auc": 0.8, "log_loss": 0.20}, spec)
    assert d.passed
    line = next(r for r in d.reasons if r.startswith("guard log_loss"))
    assert "better by 0.0500" in line and "worse" not in line
