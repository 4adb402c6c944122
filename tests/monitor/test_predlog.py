"""The prediction log writer: columnar and row appends, bounds, flush on close, atomic parts."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from loopml.monitor.predlog import META_COLUMNS, PredictionLogWriter, read_predictions, write_part

NAMES = ("f0", "f1", "f2")


def columns(n: int, start: int, *, variant: str = "champion", block: bool = False):
    X = np.arange(start * 3, (start + n) * 3, dtype=np.float64).reshape(n, 3)
    meta = {"request_id": [f"r{start + i}" for i in range(n)], "ts": 1_700_000_000.0 + start, "model": "m",
            "version": "2", "variant": variant}
    inputs = (NAMES, X) if block else {k: X[:, j] for j, k in enumerate(NAMES)}
    outputs = {"prediction": (np.arange(start, start + n) % 2).astype(np.int64),
               "proba": np.linspace(0, 1, n) if n > 1 else np.array([0.5])}
    return meta, inputs, outputs, n


def test_round_trip_columns_and_records_share_one_layout(tmp_path):
    w = PredictionLogWriter(tmp_path, "m", flush_interval_s=60).start()
    assert w.append_columns(*columns(3, 0))
    assert w.append_columns(*columns(2, 3, variant="shadow", block=True))
    assert w.append([{"request_id": "rec", "ts": 1_700_000_100.5, "model": "m", "version": 2, "variant": "champion",
                      "inputs": {"f0": 1.5, "f1": None, "f2": 3.0}, "outputs": {"prediction": 1, "proba": 0.25}}])
    w.close()
    parts = list((tmp_path / "m").glob("part-*.parquet"))
    assert len(parts) == 1 and w.written == 6 and w.pending == 0 and w.dropped == 0
    schema = pq.read_schema(parts[0])
    assert schema.names == [*META_COLUMNS, "in.f0", "in.f1", "in.f2", "out.prediction", "out.proba"]
    assert str(schema.field("ts").type) == "timestamp[ns, tz=UTC]"
    assert str(schema.field("version").type) == "string" and str(schema.field("in.f0").type) == "double"
    df = read_predictions(tmp_path, "m").sort_values("request_id", ignore_index=True)  # rows of equal ts
    assert list(df["request_id"]) == ["r0", "r1", "r2", "r3", "r4", "rec"]
    assert list(df["variant"]) == ["champion"] * 3 + ["shadow"] * 2 + ["champion"]
    assert set(df["version"]) == {"2"} and set(df["model"]) == {"m"}
    assert df["in.f1"].tolist()[:5] == [1.0, 4.0, 7.0, 10.0, 13.0] and np.isnan(df["in.f1"].iloc[5])
    assert df["out.prediction"].tolist() == [0, 1, 0, 1, 0, 1]
    assert df["out.proba"].tolist() == [0.0, 0.5, 1.0, 0.0, 1.0, 0.25]
    ts = df["ts"].astype("int64") // 10**9
    assert ts.tolist() == [1_700_000_000] * 3 + [1_700_000_003] * 2 + [1_700_000_100]


def test_write_part_of_records_matches_the_writer(tmp_path):
    recs = [{"request_id": f"x{i}", "ts": 1_700_000_000.0 + i, "model": "m", "version": "1", "variant": "v1",
             "inputs": {"a": float(i), "c": "u" if i % 2 else None}, "outputs": {"prediction": i}} for i in range(4)]
    path = write_part(tmp_path / "m", recs)
    df = read_predictions(tmp_path, "m")  # distinct ts: ordered
    assert path.exists() and list(df["request_id"]) == ["x0", "x1", "x2", "x3"]
    assert df["in.c"].tolist()[1] == "u" and df["in.c"].isna().tolist() == [True, False, True, False]


def test_bounded_queue_drops_and_counts(tmp_path):
    w = PredictionLogWriter(tmp_path, "m", max_queue_rows=5, flush_interval_s=60, flush_rows=10**9)
    w.start()
    assert w.append_columns(*columns(3, 0))
    assert not w.append_columns(*columns(3, 3))  # 6 > 5: refused whole, counted
    assert w.append_columns(*columns(2, 6))
    assert not w.append([{"request_id": "z", "ts": 1.0, "model": "m", "version": "1", "variant": "c",
                          "inputs": {}, "outputs": {}}])
    assert w.dropped == 4 and w.pending == 5
    w.close()
    assert w.written == 5 and w.pending == 0
    assert sorted(read_predictions(tmp_path, "m")["request_id"]) == ["r0", "r1", "r2", "r6", "r7"]
    with pytest.raises(ValueError):
        w.append_columns({}, (NAMES, np.zeros((2, 2))), {}, 2)


def test_flushes_by_rows_and_close_writes_the_rest(tmp_path):
    w = PredictionLogWriter(tmp_path, "m", flush_rows=10, flush_interval_s=60).start()
    for i in range(4):
        w.append_columns(*columns(5, 5 * i, block=True))
    deadline = time.monotonic() + 10
    while w.written < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.written >= 10  # the row threshold woke the writer; no 60 s interval needed
    for i in range(4, 7):
        w.append_columns(*columns(5, 5 * i, block=True))
    w.close()
    df = read_predictions(tmp_path, "m")
    assert w.written == 35 and len(df) == 35 and df["request_id"].is_unique
    df = df.assign(i=df["request_id"].str[1:].astype(int)).sort_values("i")  # equal ts: any order
    assert df["in.f2"].tolist() == [3.0 * i + 2 for i in range(35)]


def test_readers_never_see_partial_files(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / ".part-0000000000000-crashed.parquet.tmp").write_bytes(b"PAR1 half a file")  # a crash mid-write
    w = PredictionLogWriter(tmp_path, "m", flush_rows=50, flush_interval_s=0.01).start()
    errors: list[BaseException] = []
    counts: list[int] = []
    stop = threading.Event()

    def read_loop():
        while not stop.is_set():
            try:
                df = read_predictions(tmp_path, "m")
                counts.append(len(df))
                assert len(df) % 50 == 0 and df["request_id"].is_unique
            except BaseException as e:  # noqa: BLE001 - surfaced below
                errors.append(e)
                return

    reader = threading.Thread(target=read_loop)
    reader.start()
    for i in range(40):
        w.append_columns(*columns(50, 50 * i, block=i % 2 == 0))
        time.sleep(0.005)
    w.close()
    stop.set()
    reader.join(30)
    assert not errors, errors[0]
    assert len(counts) > 3 and counts == sorted(counts)
    assert len(read_predictions(tmp_path, "m")) == 2000
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp") and "crashed" not in p.name]
