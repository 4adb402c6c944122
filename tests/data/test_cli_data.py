"""``loopml data snapshot`` and ``loopml data validate`` through Typer's test runner."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

import loopml.spec
from loopml.cli.data import app
from loopml.errors import DataSourceError, SnapshotNotFound

runner = CliRunner()

SPEC = """\
name: churn
task: classification
data:
  source: data/train.csv
  target: churned
  id_column: customer_id
model:
  estimator: sklearn.linear_model.LogisticRegression
contract:
  min_rows: 3
  columns:
    tenure: {dtype: int, min: 0, nullable: false}
    plan: {allowed: [basic, pro]}
"""


@pytest.fixture(autouse=True)
def _no_estimator_check(monkeypatch):
    # The data commands never build the estimator; keep these tests independent of train/.
    monkeypatch.setattr(loopml.spec, "_check_estimator_params", lambda spec, path: None)


@pytest.fixture
def project(tmp_path):
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    (proj / "loopml.yaml").write_text(SPEC)
    pd.DataFrame({
        "customer_id": [1, 2, 3, 4], "tenure": [1, 5, 0, 12],
        "plan": ["basic", "pro", "pro", "basic"], "churned": [0, 1, 0, 1],
    }).to_csv(proj / "data" / "train.csv", index=False)
    return proj


def invoke(*args, home):
    return runner.invoke(app, [*args, "--home", str(home)])


def test_snapshot_defaults_to_the_spec_source(project, tmp_path):
    result = invoke("snapshot", "-p", str(project), "--json", home=tmp_path / "ws")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["id"].startswith("ds-") and out["row_count"] == 4 and out["source"] == "data/train.csv"
    assert out["schema"]["plan"] == "str"
    assert out["profile"]["columns"]["tenure"]["kind"] == "numeric"
    assert (tmp_path / "ws" / "snapshots" / out["id"] / "data.parquet").exists()


def test_snapshot_explicit_source_prints_a_profile_table(project, tmp_path):
    result = invoke("snapshot", str(project / "data" / "train.csv"), home=tmp_path / "ws")
    assert result.exit_code == 0, result.output
    assert "ds-" in result.output and "4 rows" in result.output and "4 columns" in result.output
    for column in ("customer_id", "tenure", "plan", "churned"):
        assert column in result.output
    assert "basic (2)" in result.output


def test_snapshot_of_a_missing_file_raises_a_loopml_error(tmp_path):
    result = invoke("snapshot", str(tmp_path / "absent.csv"), home=tmp_path / "ws")
    assert result.exit_code != 0
    assert isinstance(result.exception, DataSourceError)
    assert "absent.csv" in str(result.exception)


def test_validate_passes_with_exit_code_0(project, tmp_path):
    result = invoke("validate", "-p", str(project), home=tmp_path / "ws")
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and "4 rows" in result.output


def test_validate_fails_with_exit_code_1_and_lists_violations(project, tmp_path):
    bad = pd.DataFrame({
        "customer_id": [1, 1, 3], "tenure": [-2, None, 3],
        "plan": ["basic", "gold", "pro"], "churned": [0, 1, 0],
    })
    bad.to_csv(project / "data" / "train.csv", index=False)
    result = invoke("validate", "-p", str(project), "--json", home=tmp_path / "ws")
    assert result.exit_code == 1
    out = json.loads(result.output)
    assert out["passed"] is False
    assert {(v["column"], v["rule"]) for v in out["violations"]} == {
        ("tenure", "nullable"), ("tenure", "min"), ("plan", "allowed"), ("customer_id", "unique"),
    }
    table = invoke("validate", out["snapshot"], "-p", str(project), home=tmp_path / "ws")
    assert table.exit_code == 1
    assert "FAIL" in table.output and "allowed" in table.output and "gold" in table.output


def test_validate_an_existing_snapshot_by_prefix(project, tmp_path):
    snap_id = json.loads(invoke("snapshot", "-p", str(project), "--json", home=tmp_path / "ws").output)["id"]
    result = invoke("validate", snap_id[:10], "-p", str(project), "--json", home=tmp_path / "ws")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["snapshot"] == snap_id


def test_validate_unknown_snapshot(project, tmp_path):
    result = invoke("validate", "ds-ffffffffffffffff", "-p", str(project), home=tmp_path / "ws")
    assert isinstance(result.exception, SnapshotNotFound)
    assert result.exception.exit_code == 2


# --- fail closed (#8): a stray text value in a numeric column, a missing target ------------


def _stray_text(project, value="twelve", at=6):
    rows = 10
    df = pd.DataFrame({
        "customer_id": range(1, rows + 1), "tenure": range(rows),
        "plan": ["basic", "pro"] * (rows // 2), "churned": [0, 1] * (rows // 2),
        "spend": [f"{12.5 + i}" for i in range(rows)],
    })
    df["spend"] = df["spend"].astype(object)
    df.loc[at, "spend"] = value
    df.to_csv(project / "data" / "train.csv", index=False)


def test_stray_text_in_a_numeric_column_fails_validation_naming_value_and_row(project, tmp_path):
    _stray_text(project)
    result = invoke("validate", "-p", str(project), "--json", home=tmp_path / "ws")
    assert result.exit_code == 1, result.output
    out = json.loads(result.output)
    (v,) = [v for v in out["violations"] if v["column"] == "spend"]
    assert v["rule"] == "mixed_types" and v["count"] == 1
    # the 7th data row (0-based position 6): line 8 of the CSV, after its header
    assert "'twelve'" in v["message"] and "row 7" in v["message"] and "line 8" in v["message"]
    assert "contract.columns.spend.dtype" in v["message"]
    table = invoke("validate", "-p", str(project), home=tmp_path / "ws")
    assert table.exit_code == 1 and "mixed_types" in table.output


def test_declared_text_column_may_hold_numbers_and_text(project, tmp_path):
    _stray_text(project)
    spec = (project / "loopml.yaml").read_text()
    (project / "loopml.yaml").write_text(spec.replace("    plan: {allowed: [basic, pro]}\n",
                                                      "    plan: {allowed: [basic, pro]}\n    spend: {dtype: string}\n"))
    result = invoke("validate", "-p", str(project), "--json", home=tmp_path / "ws")
    assert result.exit_code == 0, result.output


def test_missing_target_is_found_at_validation_counting_every_row(project, tmp_path):
    df = pd.DataFrame({
        "customer_id": range(1, 21), "tenure": range(20), "plan": ["basic", "pro"] * 10,
        "churned": [0, 1, None, 1] * 5,
    })
    df.to_csv(project / "data" / "train.csv", index=False)
    result = invoke("validate", "-p", str(project), "--json", home=tmp_path / "ws")
    assert result.exit_code == 1, result.output
    (v,) = [v for v in json.loads(result.output)["violations"] if v["column"] == "churned"]
    assert v["rule"] == "nullable" and v["count"] == 5 and "5 missing" in v["message"]
    assert "target" in v["message"]
