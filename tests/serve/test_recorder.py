"""The prediction recorder: acknowledged mode (group commit, refusals, failed writes), its
settings, background compaction, and a SIGKILLed real server that lost no acknowledged answer."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from loopml.errors import PredictionNotLogged, ServeError
from loopml.monitor.predlog import read_predictions
from loopml.serve.recorder import LogSettings, PredictionRecorder
from loopml.serve.runtime import InputColumn, Prediction, Rows

INPUTS = [InputColumn("a", "double"), InputColumn("b", "double")]
ACK = LogSettings(mode="acknowledged", compact_interval_s=0)


def batch(ids: list[str]) -> tuple[Rows, Prediction]:
    n = len(ids)
    X = np.arange(2 * n, dtype=np.float64).reshape(n, 2)
    rows = Rows({"a": X[:, 0].tolist(), "b": X[:, 1].tolist()}, n, list(ids))
    return rows, Prediction(np.zeros(n, dtype=np.int64), None, X)


async def answer(rec: PredictionRecorder, rid: str) -> str:
    """What a deployment does per request: mark, predict (here: record one row), wait."""
    mark = rec.log_mark()
    rows, pred = batch([rid])
    await asyncio.sleep(0)  # other requests interleave, as under the batcher
    rec.record(rows, pred, "1", "champion", INPUTS)
    if mark is not None:
        await rec.durable(mark)
    return rid


def test_acknowledged_answers_only_after_the_rows_are_on_disk_sharing_fsyncs(tmp_path):
    rec = PredictionRecorder(tmp_path, "m", settings=ACK).start()
    try:
        async def main():
            done = []
            for rid in await asyncio.gather(*(answer(rec, f"r{i}") for i in range(200))):
                done.append(rid)
                # at the moment a request may answer, its row is already readable from disk
            return done

        answered = asyncio.run(main())
        on_disk = set(read_predictions(tmp_path, "m")["request_id"])
        assert set(answered) <= on_disk and len(on_disk) == 200
        assert 1 <= rec.writer.commits < 200  # group commit: many answers per fsync
    finally:
        rec.close()


def test_async_mode_answers_without_waiting(tmp_path):
    rec = PredictionRecorder(tmp_path, "m", settings=LogSettings(compact_interval_s=0),
                             flush_interval_s=60).start()
    try:
        assert rec.log_mark() is None
        asyncio.run(answer(rec, "x"))
        assert rec.writer.pending == 1 and len(read_predictions(tmp_path, "m")) == 0  # the crash window
    finally:
        rec.close()
    assert list(read_predictions(tmp_path, "m")["request_id"]) == ["x"]


def test_a_refused_or_failed_write_is_an_error_not_an_answer(tmp_path):
    rec = PredictionRecorder(tmp_path, "m", settings=ACK, max_pending_rows=1).start()
    try:
        async def refused():
            mark = rec.log_mark()
            rows, pred = batch(["a", "b"])  # 2 rows > the queue bound: refused
            rec.record(rows, pred, "1", "champion", INPUTS)
            await rec.durable(mark)

        with pytest.raises(PredictionNotLogged):
            asyncio.run(refused())
        assert asyncio.run(answer(rec, "ok")) == "ok"  # a later request is not blamed
    finally:
        rec.close()
    (tmp_path / "n").mkdir()
    (tmp_path / "n" / "m").write_text("a file where the log folder should be")  # every write fails
    rec = PredictionRecorder(tmp_path / "n", "m", settings=ACK).start()
    try:
        with pytest.raises(PredictionNotLogged) as err:
            asyncio.run(answer(rec, "lost"))
        assert err.value.http_status == 503 and rec.writer.failed == 1
    finally:
        rec.close()


def test_settings_from_the_environment():
    s = LogSettings.from_env({"LOOPML_PREDICTION_LOG_MODE": "acknowledged", "LOOPML_PREDICTION_LOG_MAX_BYTES": "1000",
                              "LOOPML_PREDICTION_LOG_RETENTION_DAYS": "7.5"})
    assert (s.mode, s.max_bytes, s.retention_days, s.compact_interval_s) == ("acknowledged", 1000, 7.5, 60.0)
    assert LogSettings.from_env({}) == LogSettings()
    with pytest.raises(ServeError, match="LOOPML_PREDICTION_LOG_MODE='sync'"):
        LogSettings.from_env({"LOOPML_PREDICTION_LOG_MODE": "sync"})
    with pytest.raises(ServeError, match="LOOPML_PREDICTION_LOG_MAX_BYTES"):
        LogSettings.from_env({"LOOPML_PREDICTION_LOG_MAX_BYTES": "lots"})


def test_the_recorder_compacts_its_log_in_the_background(tmp_path):
    rec = PredictionRecorder(tmp_path, "m", settings=LogSettings(compact_interval_s=0.05),
                             flush_interval_s=0.01).start()
    try:
        for i in range(5):
            rows, pred = batch([f"r{i}"])
            rec.record(rows, pred, "1", "champion", INPUTS)
            time.sleep(0.03)
        end = time.monotonic() + 20
        while time.monotonic() < end and (rec.compactions < 2 or list((tmp_path / "m").glob("part-*"))):
            time.sleep(0.02)
    finally:
        rec.close()
    rec.compact_now()  # the last flush may follow the last round
    assert rec.compaction_errors == 0 and not list((tmp_path / "m").glob("part-*"))
    assert list((tmp_path / "m").glob("date=*/hour=*/c-*.parquet"))
    assert sorted(read_predictions(tmp_path, "m")["request_id"]) == [f"r{i}" for i in range(5)]


# -- a real `loopml serve`, SIGKILLed under load ----------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigkill_under_load_loses_no_acknowledged_prediction(registered_model):
    from loopml.demo.data import generate_transactions
    from loopml.registry.client import Registry

    ws, name = registered_model
    reg = Registry(ws)
    cols = [c["name"] for c in reg.signature(reg.resolve(name))["inputs"]]
    rows = generate_transactions(50, seed=3)[cols].to_dict(orient="records")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "LOOPML_HOME": str(ws.home), "LOOPML_PREDICTION_LOG_MODE": "acknowledged"}
    proc = subprocess.Popen([sys.executable, "-c", "from loopml.cli.main import main; main()", "serve", "-m", name,
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    answered: list[str] = []
    stop = threading.Event()

    def client(k: int) -> None:
        with httpx.Client(timeout=10) as c:
            i = 0
            while not stop.is_set():
                rid = f"c{k}-{i}"
                i += 1
                try:
                    r = c.post(url + "/invocations", json={"dataframe_records": [rows[i % len(rows)]]},
                               headers={"x-request-id": rid})
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    answered.append(r.headers["x-request-id"])

    try:
        end = time.monotonic() + 90
        while time.monotonic() < end:
            try:
                if httpx.get(url + "/v2/health/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        end = time.monotonic() + 60
        while len(answered) < 400 and time.monotonic() < end:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # mid-load: requests are in flight
        proc.wait(30)
        stop.set()
        for t in threads:
            t.join(30)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
    assert len(answered) >= 400
    logged = set(read_predictions(ws.predictions, name)["request_id"])
    missing = [rid for rid in answered if rid not in logged]
    assert not missing, f"{len(missing)} of {len(answered)} answered predictions are not in the log"


def test_the_specs_prediction_log_section_reaches_the_servers_environment(tmp_path, monkeypatch):
    """loopml.yaml's monitoring.prediction_log is exported for the server and its workers;
    a variable the user set wins; a typo is a spec error naming the field."""
    import pytest
    import yaml

    from loopml.cli.serve import _project_serving
    from loopml.demo.project import scaffold_project
    from loopml.errors import SpecError
    from loopml.serve.recorder import ENV, LogSettings

    proj = scaffold_project(tmp_path / "p", rows=200)
    raw = yaml.safe_load((proj / "loopml.yaml").read_text())
    raw.setdefault("monitoring", {})["prediction_log"] = {"mode": "acknowledged", "retention_days": 3}
    (proj / "loopml.yaml").write_text(yaml.safe_dump(raw))
    for var in ENV.values():
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(ENV["retention_days"], "9")  # the user's own setting wins
    _project_serving(proj)
    got = LogSettings.from_env()
    assert (got.mode, got.retention_days, got.compact_interval_s) == ("acknowledged", 9.0, 60.0)

    raw["monitoring"]["prediction_log"] = {"mode": "acknowleged"}
    (proj / "loopml.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="monitoring.prediction_log.mode"):
        _project_serving(proj)
