"""The PyTorch runtime on real models: mlflow.pytorch (torch.export, TorchScript, pickled) and
loopml's own torch models, registered in a real workspace and served through ModelRuntime."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from loopml.errors import InvalidInput, UnsafeModelFormat
from loopml.registry.client import Registry
from loopml.serve.runtime import ModelRuntime, Rows
from tests.serve.runtimes.flavors import mlp, register_saved, tabular, workspace_at




def _save_pytorch(net, fmt, example):
    import mlflow.pytorch

    def save(path):
        mlflow.pytorch.save_model(net, path, serialization_format=fmt, input_example=example,
                                  pip_requirements=["torch"])  # explicit: no requirement inference subprocess
    return save


def train_tabular_torch(seed: int = 0):
    """A loopml TorchTabularModel (ColumnTransformer + TabularMLP), trained for a few steps."""
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from loopml.train.mlp import TabularMLP
    from loopml.train.torch_model import TorchTabularModel

    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200), "c": rng.choice(["x", "y", "z"], 200)})
    y = np.where(X["a"] + (X["c"] == "x") > 0.5, "yes", "no")
    pre = ColumnTransformer([("num", StandardScaler(), ["a", "b"]),
                             ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["c"])]).fit(X)
    torch.manual_seed(seed)
    net = TabularMLP(5, 2, hidden=[8])
    Xt = torch.from_numpy(np.asarray(pre.transform(X), dtype=np.float32))
    yt = torch.from_numpy((y == "yes").astype(np.int64))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(Xt), yt).backward()
        opt.step()
    model = TorchTabularModel(pre, net, module_path="loopml.train.mlp:TabularMLP",
                              init_args={"in_features": 5, "out_features": 2, "hidden": [8]},
                              task="classification", classes=np.array(["no", "yes"]))
    return model, X


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One workspace holding each kind of torch model (logging is the slow part: done once)."""
    ws = workspace_at(tmp_path_factory.mktemp("torch") / "ws")
    X, _ = tabular()
    net = mlp()
    versions = {
        "pt2": register_saved(ws, "net", _save_pytorch(net, "pt2", X[:4])),
        "script": register_saved(ws, "net", _save_pytorch(torch.jit.script(net), "pickle", X[:4])),
        "pickled": register_saved(ws, "net", _save_pytorch(net, "pickle", X[:4])),
    }
    tab, frame = train_tabular_torch()
    reg = Registry(ws)
    with reg.run("tab") as run:
        uri = run.log_model(tab, frame.head(3), flavor="loopml_torch")
        versions["tabular"] = reg.register(uri, "tab", run.run_id, {}).version
    return ws, net, X, versions, tab, frame


def _expected(net, X):
    with torch.inference_mode():
        return net(torch.from_numpy(X)).numpy().astype(np.float64)


@pytest.mark.parametrize("kind", ["pt2", "script"])
def test_mlflow_pytorch_model_is_served_by_torch_runtime_with_the_modules_answers(models, kind):
    ws, net, X, versions, *_ = models
    reg = Registry(ws)
    rt = ModelRuntime(reg, reg.resolve("net", versions[kind]), predict_in_thread=False).load()
    assert rt.runtime_name == "torch" and rt.fallback_reason is None
    # metadata from the tensor signature MLflow inferred from the input example
    assert [(c.name, c.datatype, list(c.shape)) for c in rt.inputs] == [("input-0", "FP32", [-1, 8])]
    pred = rt.predict_sync(Rows({"input-0": X[:50]}, 50, layout="tensors"))
    assert pred.predict.shape == (50, 3) and pred.proba is None
    assert np.allclose(pred.predict, _expected(net, X[:50]), rtol=0, atol=1e-6)


def test_program_exported_for_one_row_answers_batches_row_by_row(models, tmp_path):
    """mlflow.pytorch exports with the input example: a one-row example makes a program whose
    batch is fixed at 1 (torch.export specialises it), which raised an AssertionError ("Guard
    failed") on any batch of 2+ rows. Now the runtime sees the fixed batch at load and splits."""
    from loopml.serve.runtimes.torch_runtime import TorchModel

    ws, net, X, versions, *_ = models
    one = register_saved(ws, "net1", _save_pytorch(net, "pt2", X[:1]))
    reg = Registry(ws)
    rt = ModelRuntime(reg, reg.resolve("net1", one), predict_in_thread=False).load()
    assert rt.runtime_name == "torch" and rt.model.fixed_batch == 1
    pred = rt.predict_sync(Rows({"input-0": X[:7]}, 7, layout="tensors"))
    assert np.allclose(pred.predict, _expected(net, X[:7]), rtol=0, atol=1e-6)
    # a program exported from a 4-row example keeps a dynamic batch: one call for any size
    dynamic = ModelRuntime(reg, reg.resolve("net", versions["pt2"]), predict_in_thread=False).load()
    assert dynamic.model.fixed_batch is None
    assert TorchModel(net).fixed_batch is None  # an eager module has no exported shape


def test_float64_rows_are_cast_to_the_modules_float32(models):
    ws, net, X, versions, *_ = models
    reg = Registry(ws)
    rt = ModelRuntime(reg, reg.resolve("net", versions["pt2"]), predict_in_thread=False).load()
    pred = rt.predict_sync(Rows({"input-0": X[:5].astype(np.float64).tolist()}, 5))
    assert np.allclose(pred.predict, _expected(net, X[:5]), rtol=0, atol=1e-6)


def test_wrong_tensor_shape_is_invalid_input_naming_the_expectation(models):
    ws, _, X, versions, *_ = models
    reg = Registry(ws)
    rt = ModelRuntime(reg, reg.resolve("net", versions["pt2"]), predict_in_thread=False).load()
    with pytest.raises(InvalidInput, match=r"input 'input-0' expects shape \[-1, 8\]"):
        rt.predict_sync(Rows({"input-0": X[:3, :5]}, 3))


def test_pickled_module_is_refused_unless_unsafe_pickle_is_allowed(models):
    ws, net, X, versions, *_ = models
    reg = Registry(ws)
    with pytest.raises(UnsafeModelFormat, match="pickled torch.nn.Module"):
        ModelRuntime(reg, reg.resolve("net", versions["pickled"])).load()
    trusting = Registry(ws, allow_unsafe_pickle=True)
    rt = ModelRuntime(trusting, trusting.resolve("net", versions["pickled"]), predict_in_thread=False).load()
    assert rt.runtime_name == "torch"
    assert np.allclose(rt.predict_sync(Rows({"input-0": X[:7]}, 7)).predict, _expected(net, X[:7]), atol=1e-6)


def test_loopml_torch_model_gets_torch_runtime_one_pass_same_answers(models):
    ws, *_, versions, tab, frame = models
    reg = Registry(ws)
    rt = ModelRuntime(reg, reg.resolve("tab", versions["tabular"]), predict_in_thread=False).load()
    assert rt.runtime_name == "torch" and rt.is_classifier and list(rt.classes) == ["no", "yes"]
    rows = Rows({c: frame[c].tolist() for c in ("a", "b", "c")}, len(frame))
    pred = rt.predict_sync(rows)
    assert np.array_equal(pred.predict, tab.predict(frame))
    assert np.array_equal(pred.proba, tab.predict_proba(frame))


def test_serving_sets_one_intra_op_thread_unless_told(models, monkeypatch):
    ws, _, _, versions, *_ = models
    reg = Registry(ws)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ModelRuntime(reg, reg.resolve("net", versions["script"])).load()
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("LOOPML_TORCH_THREADS", "2")
        ModelRuntime(reg, reg.resolve("net", versions["script"])).load()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_batch_prediction_of_a_tensor_model_from_a_csv(models, tmp_path):
    """`loopml predict` on a tensor-signature model ([-1, 8]): the file's 8 data columns, in
    file order, are the tensor (an id column aside); each row's 3 logits are one list value of
    the Parquet output. The wrong number of columns is one clear error naming the input."""
    import pandas as pd
    import pyarrow.parquet as pq

    from loopml.serve.batch import predict_file

    ws, net, X, versions, *_ = models
    reg = Registry(ws)
    ref = reg.resolve("net", versions["pt2"])
    frame = pd.DataFrame(X[:250], columns=[f"f{j}" for j in range(8)])
    frame.insert(3, "row_id", [f"r{i}" for i in range(250)])
    src = tmp_path / "rows.csv"
    frame.to_csv(src, index=False)
    out = tmp_path / "out.parquet"
    result = predict_file(reg, ref, str(src), str(out), chunk_rows=100, id_column="row_id")
    assert (result.rows, result.chunks) == (250, 3)
    table = pq.read_table(out).to_pandas()
    assert list(table["row_id"]) == list(frame["row_id"]) and set(table["version"]) == {versions["pt2"]}
    got = np.stack(table["prediction"].to_numpy())
    assert got.shape == (250, 3) and np.allclose(got, _expected(net, X[:250]), rtol=0, atol=1e-5)
    frame.drop(columns=["f7"]).to_csv(src, index=False)
    with pytest.raises(InvalidInput, match=r"input 'input-0' FP32 \[-1, 8\]: it needs 8 data column"):
        predict_file(reg, ref, str(src), str(tmp_path / "bad.parquet"), id_column="row_id")
    assert not (tmp_path / "bad.parquet").exists()  # nothing half-written


def test_a_pinned_runtime_serves_only_with_that_runtime_or_fails_closed(models, monkeypatch):
    """LOOPML_SERVE_RUNTIME (a ModelDeployment's spec.runtime): 'torch' serves the network with
    the torch runtime; 'xgboost' does not take it, so it is not served at all; a value loopml
    does not know is refused when the settings load."""
    from loopml.errors import ModelCheckFailed, ServeError
    from loopml.serve.settings import ServeSettings

    ws, net, X, versions, *_ = models
    reg = Registry(ws)
    ref = reg.resolve("net", versions["pt2"])
    monkeypatch.setenv("LOOPML_SERVE_RUNTIME", "torch")
    pin = ServeSettings.from_env().runtime
    rt = ModelRuntime(reg, ref, predict_in_thread=False, runtime=pin).load()
    assert (pin, rt.runtime_name) == ("torch", "torch")
    with pytest.raises(ModelCheckFailed, match="pinned to 'xgboost'"):
        ModelRuntime(reg, ref, predict_in_thread=False, runtime="xgboost").load()
    monkeypatch.setenv("LOOPML_SERVE_RUNTIME", "tensorrt")
    with pytest.raises(ServeError, match="runtime"):
        ServeSettings.from_env()
