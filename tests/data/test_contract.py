"""validate_frame: each rule with a violating and a passing table; the report; infer_contract."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from loopml.data.contract import ContractReport, contract_for, infer_contract, validate_frame
from loopml.errors import ContractViolation
from loopml.spec import ContractSpec, ProjectSpec


def contract(**kw) -> ContractSpec:
    return ContractSpec.model_validate(kw)


def only(report: ContractReport, rule: str):
    assert not report.passed
    assert [v.rule for v in report.violations] == [rule], report.to_markdown()
    return report.violations[0]


def test_required_column_missing_suggests_a_close_name():
    df = pd.DataFrame({"income": [1, 2]})
    v = only(validate_frame(df, contract(columns={"incme": {}})), "required")
    assert v.column == "incme" and "did you mean 'income'" in v.message
    assert validate_frame(df, contract(columns={"income": {}})).passed
    assert validate_frame(df, contract(columns={"extra": {"required": False}})).passed


@pytest.mark.parametrize(
    ("dtype", "bad", "good", "offending_rows"),
    [
        ("int", [1.0, 2.5, np.nan], [1.0, 2.0, np.nan], [1]),  # int with gaps is read as float
        ("int", ["1", "x", "3"], [1, 2, 3], [1]),
        ("float", ["1.5", "oops", None], [1, 2, 3], [1]),
        ("number", [True, False, True], [0.5, 1, 2], [0, 1, 2]),
        ("bool", [0, 1, 2], [True, None, False], [2]),
        ("bool", ["yes", "true", "False"], ["TRUE", "false", "0"], [0]),
        ("string", [1, 2, 3], ["a", None, "c"], [0, 1, 2]),
        ("string", pd.Series(["a", 5, "c"], dtype=object), pd.Series(["a", "b"], dtype="category"), [1]),
        ("category", [0.1, 0.2, 0.3], ["a", "b", "a"], [0, 1, 2]),
        ("datetime", ["2024-01-01", "not a date", None], ["2024-01-01", "2024-03-05 10:00", None], [1]),
        ("datetime", [1, 2, 3], pd.to_datetime(["2024-01-01", "2024-02-01"]), [0, 1, 2]),
    ],
)
def test_dtype_rule(dtype, bad, good, offending_rows):
    c = contract(columns={"v": {"dtype": dtype}})
    v = only(validate_frame(pd.DataFrame({"v": bad}), c), "dtype")
    assert v.column == "v" and v.count == len(offending_rows)
    assert [e["row"] for e in v.examples] == offending_rows
    assert f"expected {dtype}" in v.message
    assert validate_frame(pd.DataFrame({"v": good}), c).passed


def test_numbers_stored_as_text_fail_as_a_whole_column():
    v = only(validate_frame(pd.DataFrame({"v": ["1", "2"]}), contract(columns={"v": {"dtype": "int"}})), "dtype")
    assert v.count == 2 and "stored as text" in v.message


def test_nullable():
    c = contract(columns={"v": {"nullable": False}})
    v = only(validate_frame(pd.DataFrame({"v": ["a", None, "c", None]}), c), "nullable")
    assert v.count == 2 and [e["row"] for e in v.examples] == [1, 3]
    assert v.examples[0]["v"] is None
    assert validate_frame(pd.DataFrame({"v": ["a", "b"]}), c).passed


def test_numeric_range_min_and_max():
    c = contract(columns={"age": {"min": 0, "max": 120}})
    report = validate_frame(pd.DataFrame({"age": [-1, 30, 130, 150, None]}), c)
    assert [(v.rule, v.count) for v in report.violations] == [("min", 1), ("max", 2)]
    assert report.violations[0].examples == [{"row": 0, "age": -1.0}]
    assert "below the minimum of 0" in report.violations[0].message
    assert validate_frame(pd.DataFrame({"age": [0, 120, None]}), c).passed


def test_allowed_categories():
    c = contract(columns={"city": {"allowed": ["paris", "lyon"]}})
    v = only(validate_frame(pd.DataFrame({"city": ["paris", "rome", None, "oslo", "rome"]}), c), "allowed")
    assert v.count == 3 and "rome" in v.message
    assert [e["city"] for e in v.examples] == ["rome", "oslo", "rome"]
    assert validate_frame(pd.DataFrame({"city": ["lyon", None, "paris"]}), c).passed
    assert validate_frame(pd.DataFrame({"code": [1, 2]}), contract(columns={"code": {"allowed": ["1", "2"]}})).passed


@pytest.mark.parametrize(("rule", "bounds", "rows"), [("min_rows", {"min_rows": 5}, 3), ("max_rows", {"max_rows": 2}, 3)])
def test_row_count_bounds(rule, bounds, rows):
    df = pd.DataFrame({"v": range(rows)})
    v = only(validate_frame(df, contract(**bounds)), rule)
    assert v.column is None and v.count == rows
    assert validate_frame(df, contract(min_rows=3, max_rows=3)).passed


def test_unique_id_column():
    c = contract(unique=["id"])
    v = only(validate_frame(pd.DataFrame({"id": [1, 2, 2, 3, 3, 3, None, None]}), c), "unique")
    assert v.column == "id" and v.count == 5 and "2 value(s) appear more than once" in v.message
    assert [e["row"] for e in v.examples] == [1, 2, 3, 4, 5]
    assert validate_frame(pd.DataFrame({"id": [1, 2, None, None]}), c).passed
    assert only(validate_frame(pd.DataFrame({"x": [1]}), c), "unique").message.startswith("required column 'id' is missing")


def test_report_lists_every_violation_and_renders():
    df = pd.DataFrame({"id": [1, 1], "age": [-5, 200], "c": ["a", "z|y"]})
    c = contract(columns={"age": {"dtype": "int", "min": 0, "max": 150}, "c": {"allowed": ["a"]}, "gone": {}}, unique=["id"], min_rows=10)
    report = validate_frame(df, c)
    rules = [(v.column, v.rule) for v in report.violations]
    assert rules == [(None, "min_rows"), ("age", "min"), ("age", "max"), ("c", "allowed"), ("gone", "required"), ("id", "unique")]
    assert all(v.examples for v in report.violations if v.rule not in ("min_rows", "required"))
    assert json.loads(json.dumps(report.to_dict()))["violations"][1]["examples"][0] == {"row": 0, "age": -5, "id": 1, "c": "a"}
    md = report.to_markdown()
    assert "| age | min | 1 |" in md and "z\\|y" in md and "6 violation(s)" in md
    with pytest.raises(ContractViolation) as info:
        report.raise_for_failure()
    assert info.value.exit_code == 1 and "age: min" in str(info.value)


def test_examples_are_capped_at_five_and_json_safe():
    df = pd.DataFrame({"t": pd.to_datetime(["2024-01-01"] * 8), "v": [np.nan] * 8})
    v = only(validate_frame(df, contract(columns={"v": {"nullable": False}})), "nullable")
    assert v.count == 8 and len(v.examples) == 5
    assert v.examples[0] == {"row": 0, "v": None, "t": "2024-01-01T00:00:00"}


def test_passing_report():
    report = validate_frame(pd.DataFrame({"v": [1]}), ContractSpec())
    assert report.passed and report.violations == [] and report.row_count == 1
    assert report.raise_for_failure() is report
    assert "passed" in report.to_markdown()


def test_infer_contract_proposes_a_contract_the_frame_passes():
    df = pd.DataFrame({
        "id": [1, 2, 3, 4], "x": [0.5, None, 1.5, 2.0], "flag": [True, None, False, True],
        "city": ["a", "b", "a", "a"], "note": ["w", "x", "y", "z"], "when": pd.to_datetime(["2024-01-01"] * 4),
    })
    c = infer_contract(df, id_column="id")
    assert {k: (v.dtype, v.nullable) for k, v in c.columns.items()} == {
        "id": ("int", False), "x": ("float", True), "flag": ("bool", True),
        "city": ("category", False), "note": ("string", False), "when": ("datetime", False),
    }
    assert c.unique == ["id"] and c.min_rows == 1
    assert validate_frame(df, c).passed
    assert not validate_frame(df.assign(id=[1, 1, 2, 3]), c).passed


def test_contract_for_adds_what_the_spec_implies():
    spec = ProjectSpec.model_validate({
        "name": "p", "task": "classification",
        "data": {"source": "d.csv", "target": "y", "id_column": "id", "features": ["a"]},
        "model": {"estimator": "sklearn.linear_model.LogisticRegression"},
        "contract": {"columns": {"a": {"dtype": "float"}}},
    })
    c = contract_for(spec)
    assert set(c.columns) == {"a", "y", "id"} and c.columns["a"].dtype == "float"
    assert c.unique == ["id"]
    report = validate_frame(pd.DataFrame({"a": [1.0, 2.0], "id": [1, 1]}), c)
    assert [(v.column, v.rule) for v in report.violations] == [("y", "required"), ("id", "unique")]


def test_run_stops_at_validation_on_stray_text_in_an_undeclared_numeric_column(workspace, project):
    """``loopml run``'s validate step: a column the contract does not declare, numbers but for
    one text value, stops the run before training (it would have become a categorical feature)."""
    from loopml.loop.pipeline import run_pipeline
    from loopml.spec import load_spec

    csv = project / "data" / "transactions.csv"
    df = pd.read_csv(csv)
    df["score"] = [f"{i * 0.5}" for i in range(len(df))]
    df.loc[41, "score"] = "?!"
    df.to_csv(csv, index=False)
    with pytest.raises(ContractViolation) as info:
        run_pipeline(load_spec(project), workspace, project_dir=project)
    assert "'?!' in row 42" in str(info.value) and info.value.exit_code == 1


def test_mixed_types_only_for_mostly_numeric_undeclared_text_columns():
    nums = [str(i / 2) for i in range(20)]
    df = pd.DataFrame({
        "stray": nums[:-1] + ["n.a."],  # numbers but one: reported
        "text": ["a", "b"] * 10,  # text: fine
        "half": nums[:10] + ["x"] * 10,  # half and half: a text column, fine
        "float": [i / 2 for i in range(20)],  # numeric dtype: fine
        "declared": nums[:-1] + ["x"],  # declared float: the dtype rule reports it, once
        "accepted": nums[:-1] + ["x"],  # declared string: accepted
    })
    report = validate_frame(df, contract(columns={"declared": {"dtype": "float"}, "accepted": {"dtype": "string"}}))
    assert {(v.column, v.rule) for v in report.violations} == {("stray", "mixed_types"), ("declared", "dtype")}
    (v,) = [v for v in report.violations if v.rule == "mixed_types"]
    assert v.count == 1 and "'n.a.' in row 20" in v.message and "line 21" in v.message
