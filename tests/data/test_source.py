"""read_table: formats, locations, and the error each bad input gives."""

from __future__ import annotations

import gzip
import uuid

import fsspec
import pandas as pd
import pytest

from loopml.data.source import read_table
from loopml.errors import DataSourceError


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({"x": [1, 2, 3], "y": [0.5, None, 2.5], "c": ["a", "b", None]})


def test_csv_and_parquet_read_the_same_table(tmp_path, frame):
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    frame.to_parquet(tmp_path / "t.pq", index=False)
    from_csv = read_table(str(tmp_path / "t.csv"))
    pd.testing.assert_frame_equal(from_csv, frame)
    pd.testing.assert_frame_equal(read_table(str(tmp_path / "t.parquet")), from_csv)
    pd.testing.assert_frame_equal(read_table(str(tmp_path / "t.pq")), from_csv)


def test_gzipped_csv(tmp_path, frame):
    with gzip.open(tmp_path / "t.csv.gz", "wt") as fh:
        frame.to_csv(fh, index=False)
    pd.testing.assert_frame_equal(read_table(str(tmp_path / "t.csv.gz")), frame)


def test_relative_path_is_taken_from_base_dir(tmp_path, frame):
    (tmp_path / "data").mkdir()
    frame.to_csv(tmp_path / "data" / "t.csv", index=False)
    assert read_table("data/t.csv", base_dir=tmp_path)["x"].tolist() == [1, 2, 3]


def test_file_url(tmp_path, frame):
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    assert read_table(f"file://{tmp_path}/t.parquet").shape == (3, 3)


def test_memory_url_csv_and_parquet(frame):
    root = f"memory://loopml-test-{uuid.uuid4().hex}"
    with fsspec.open(f"{root}/t.csv", "w") as fh:
        frame.to_csv(fh, index=False)
    with fsspec.open(f"{root}/t.parquet", "wb") as fh:
        frame.to_parquet(fh, index=False)
    pd.testing.assert_frame_equal(read_table(f"{root}/t.csv"), frame)
    pd.testing.assert_frame_equal(read_table(f"{root}/t.parquet"), frame)


def test_folder_of_parquet_files_is_concatenated_in_name_order(tmp_path, frame):
    folder = tmp_path / "parts"
    folder.mkdir()
    frame.iloc[2:].to_parquet(folder / "part-1.parquet", index=False)
    frame.iloc[:2].to_parquet(folder / "part-0.parquet", index=False)
    (folder / "_SUCCESS").write_text("")
    assert read_table(str(folder))["x"].tolist() == [1, 2, 3]


def _error(source: str, **kw) -> str:
    with pytest.raises(DataSourceError) as info:
        read_table(source, **kw)
    assert info.value.source == source
    return str(info.value)


def test_missing_file_names_the_file_and_where_it_looked(tmp_path):
    msg = _error("nope.csv", base_dir=tmp_path)
    assert msg.startswith("nope.csv:")
    assert "not found" in msg and str(tmp_path / "nope.csv") in msg


def test_missing_memory_url():
    assert "not found" in _error(f"memory://absent-{uuid.uuid4().hex}/t.csv")


def test_unknown_extension(tmp_path):
    (tmp_path / "t.xlsx").write_text("x")
    msg = _error(str(tmp_path / "t.xlsx"))
    assert "unknown file type (.xlsx)" in msg and ".parquet" in msg


def test_malformed_csv_names_the_line(tmp_path):
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,4\n5,6,7\n")
    msg = _error(str(tmp_path / "bad.csv"))
    assert "malformed CSV at line 4" in msg and "expected 2 fields, saw 3" in msg


def test_empty_csv_and_empty_parquet(tmp_path):
    (tmp_path / "e.csv").write_text("")
    (tmp_path / "e.parquet").write_bytes(b"")
    assert "empty" in _error(str(tmp_path / "e.csv"))
    assert "empty" in _error(str(tmp_path / "e.parquet"))


def test_corrupt_parquet(tmp_path):
    (tmp_path / "c.parquet").write_bytes(b"this is not parquet at all")
    assert "not a readable Parquet file" in _error(str(tmp_path / "c.parquet"))


def test_folder_without_parquet_files(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("hi")
    assert "no .parquet" in _error(str(tmp_path / "d"))


def test_unknown_url_scheme():
    assert "unsupported URL" in _error("nosuchscheme://bucket/t.csv")


def test_not_utf8_csv(tmp_path):
    (tmp_path / "l.csv").write_bytes("name\ncaf\xe9\n".encode("latin-1") + b"\xff\xfe\n")
    assert "UTF-8" in _error(str(tmp_path / "l.csv"))
