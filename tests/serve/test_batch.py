"""Batch prediction (serve/batch.py, `loopml predict`) on the real registered example model."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from loopml.errors import DataSourceError, InvalidInput
from loopml.registry.client import Registry
from loopml.serve.batch import predict_file


@pytest.fixture
def model(registered_model, tmp_path):
    ws, name = registered_model
    reg = Registry(ws)
    ref = reg.resolve(name)
    native = reg.load_native(ref)
    features = list(native.feature_names_in_)
    from loopml.demo.project import scaffold_project

    proj = scaffold_project(tmp_path / "p", rows=1500)
    frame = pd.read_csv(proj / "data" / "transactions_recent.csv")
    return ws, reg, ref, native, features, frame


def _expected(native, features, frame):
    return native.predict(frame[features]), native.predict_proba(frame[features])


def test_csv_in_chunks_equals_the_models_own_predictions(model, tmp_path):
    ws, reg, ref, native, features, frame = model
    src, out = tmp_path / "in.csv", tmp_path / "out" / "pred.parquet"
    frame.to_csv(src, index=False)
    seen = []
    result = predict_file(reg, ref, str(src), str(out), chunk_rows=400, id_column="transaction_id",
                          on_progress=lambda rows, frac: seen.append((rows, frac)))
    assert result.rows == len(frame) and result.chunks == -(-len(frame) // 400)
    table = pq.read_table(out).to_pandas()
    want, proba = _expected(native, features, frame)
    assert np.array_equal(table["prediction"].to_numpy(), want)
    classes = list(native.classes_)
    got_proba = table[[f"proba_{c}" for c in classes]].to_numpy()
    assert np.allclose(got_proba, proba, atol=1e-9)
    assert (table["version"] == ref.version).all() and (table["model"] == ref.name).all()
    assert table["transaction_id"].tolist() == frame["transaction_id"].tolist()
    assert table["request_id"].is_unique
    assert [r for r, _ in seen] == sorted(r for r, _ in seen) and seen[-1][0] == len(frame)
    assert pq.ParquetFile(out).num_row_groups == result.chunks  # one row group per chunk: bounded memory


def test_parquet_and_chunk_size_do_not_change_the_answers(model, tmp_path):
    ws, reg, ref, native, features, frame = model
    small = frame.head(60)
    small.to_parquet(tmp_path / "in.parquet")
    a = predict_file(reg, ref, str(tmp_path / "in.parquet"), str(tmp_path / "a.parquet"), chunk_rows=1)
    b = predict_file(reg, ref, str(tmp_path / "in.parquet"), str(tmp_path / "b.parquet"), chunk_rows=10_000)
    assert (a.chunks, b.chunks) == (60, 1)
    ta, tb = pq.read_table(tmp_path / "a.parquet").to_pandas(), pq.read_table(tmp_path / "b.parquet").to_pandas()
    assert np.array_equal(ta["prediction"], tb["prediction"])
    assert np.array_equal(ta["prediction"], native.predict(small[features]))


def test_fsspec_urls_in_and_out(model):
    import fsspec

    ws, reg, ref, native, features, frame = model
    fs = fsspec.filesystem("memory")
    with fs.open("/batch/in.csv", "w") as f:
        frame.head(100).to_csv(f, index=False)
    result = predict_file(reg, ref, "memory://batch/in.csv", "memory://batch/out.parquet", chunk_rows=30)
    assert result.rows == 100
    with fs.open("/batch/out.parquet", "rb") as f:
        table = pq.read_table(f).to_pandas()
    assert np.array_equal(table["prediction"], native.predict(frame.head(100)[features]))


def test_missing_column_names_it_and_writes_nothing(model, tmp_path):
    ws, reg, ref, native, features, frame = model
    frame.drop(columns=[features[0]]).to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(InvalidInput, match=f"needs column.*{features[0]}"):
        predict_file(reg, ref, str(tmp_path / "in.csv"), str(tmp_path / "out.parquet"))
    assert list(tmp_path.glob("*.parquet")) == [] and list(tmp_path.glob(".*tmp")) == []


def test_a_bad_value_mid_file_names_the_rows_and_leaves_no_partial_output(model, tmp_path):
    ws, reg, ref, native, features, frame = model
    numeric = next(c for c in features if pd.api.types.is_float_dtype(frame[c]))
    bad = frame.copy()
    bad[numeric] = bad[numeric].astype(object)
    bad.loc[1234, numeric] = "oops"
    bad.to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(InvalidInput, match=r"rows 1201-1400"):
        predict_file(reg, ref, str(tmp_path / "in.csv"), str(tmp_path / "out.parquet"), chunk_rows=200)
    assert not (tmp_path / "out.parquet").exists() and list(tmp_path.glob(".*tmp")) == []


def test_unknown_file_type_and_missing_file(model, tmp_path):
    ws, reg, ref, *_ = model
    with pytest.raises(DataSourceError, match="unknown file type"):
        predict_file(reg, ref, str(tmp_path / "in.json"), str(tmp_path / "o.parquet"))
    with pytest.raises(DataSourceError, match="not found"):
        predict_file(reg, ref, str(tmp_path / "nope.csv"), str(tmp_path / "o.parquet"))


def test_logged_rows_are_in_the_prediction_log_under_the_output_request_ids(model, tmp_path):
    from loopml.monitor.predlog import read_predictions

    ws, reg, ref, native, features, frame = model
    frame.head(250).to_csv(tmp_path / "in.csv", index=False)
    result = predict_file(reg, ref, str(tmp_path / "in.csv"), str(tmp_path / "o.parquet"), chunk_rows=100,
                          log_root=ws.predictions)
    assert result.logged == 250
    log = read_predictions(ws.predictions, ref.name)
    out = pq.read_table(tmp_path / "o.parquet").to_pandas()
    assert set(log["request_id"]) == set(out["request_id"]) and set(log["variant"]) == {"batch"}


def test_cli_predicts_and_reports_bad_input_in_one_line(model, tmp_path):
    ws, reg, ref, native, features, frame = model
    frame.head(50).to_csv(tmp_path / "in.csv", index=False)
    env_home = ["--home", str(ws.home)]
    ok = subprocess.run([sys.executable, "-m", "loopml.cli.main", "predict", "-m", f"{ref.name}@champion",
                         str(tmp_path / "in.csv"), str(tmp_path / "o.parquet"), *env_home],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "50 rows" in ok.stderr and len(pq.read_table(tmp_path / "o.parquet")) == 50
    bad = subprocess.run([sys.executable, "-m", "loopml.cli.main", "predict", "-m", "nosuch",
                          str(tmp_path / "in.csv"), str(tmp_path / "o2.parquet"), *env_home],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "nosuch" in bad.stderr
