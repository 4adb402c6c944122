"""The PyTorch trainer: spec errors naming the field, fitting, the safe file format, and a
torch model registered through the pipeline and served by today's server."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import yaml

from loopml.errors import SpecError
from loopml.spec import load_spec, parse_spec
from loopml.train.contract import FLAVOR_TORCH
from loopml.train.torch_model import load_model
from loopml.train.trainer import coerce_features, split_frame, train_model
from tests.train.conftest import write_project


def _raw(project):
    return yaml.safe_load((project / "loopml.yaml").read_text())


def _with_model(project, **model):
    raw = _raw(project)
    raw["model"] = {**raw["model"], **model}
    return raw


@pytest.mark.parametrize("model, expected", [
    ({"module": "no_such_pkg.nets:Net"}, "model.module: cannot use 'no_such_pkg.nets:Net': No module named 'no_such_pkg'"),
    ({"module": "collections:OrderedDict"}, "model.module: cannot use 'collections:OrderedDict': 'collections:OrderedDict' is not a torch.nn.Module subclass"),
    ({"module": "loopml.train.mlp"}, "model.module: expected 'package.module:ClassName'"),
    ({"params": {"hiden": [8]}}, "model.params.hiden: TabularMLP has no parameter 'hiden'; did you mean 'hidden'?"),
    ({"params": {"dropout": 2}}, "model.params.dropout: The 'dropout' parameter of TabularMLP must be a float in [0, 1)"),
    ({"params": {"in_features": 3}}, "model.params.in_features: set by loopml from the data; remove it"),
    ({"estimator": "sklearn.linear_model.LogisticRegression"}, "model.estimator: a torch model names its network"),
    ({"lr": -1}, "model.lr:"),
])
def test_torch_spec_errors_name_the_field(torch_project, model, expected):
    with pytest.raises(SpecError) as e:
        parse_spec(_with_model(torch_project, **model))
    assert expected in str(e.value)
    assert "\n" not in str(e.value) and e.value.exit_code == 2


def test_torch_only_settings_are_refused_for_an_sklearn_model(torch_project):
    raw = _raw(torch_project)
    raw["model"] = {"estimator": "sklearn.linear_model.LogisticRegression", "epochs": 5}
    with pytest.raises(SpecError, match=r"model\.epochs: only a torch model takes it"):
        parse_spec(raw)
    raw["model"] = {"kind": "sklearn"}
    with pytest.raises(SpecError, match=r"model\.estimator: required for an sklearn model"):
        parse_spec(raw)


def test_default_module_is_loopmls_mlp(torch_project):
    assert load_spec(torch_project).model.module == "loopml.train.mlp:TabularMLP"


def test_fit_classifier_and_its_file_format_roundtrip(torch_project, tmp_path):
    spec = load_spec(torch_project)
    import pandas as pd

    df = pd.read_csv(torch_project / "data.csv")
    split = split_frame(spec, df)
    trained = train_model(spec, split.train)
    assert trained.flavor == FLAVOR_TORCH
    X = coerce_features(split.test[trained.features], trained.numeric, trained.categorical)
    pred = trained.model.predict(X)
    assert set(np.unique(pred)) <= {0, 1} and (pred == split.test["label"].to_numpy()).mean() > 0.85
    proba = trained.model.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.allclose(proba.sum(1), 1)
    assert list(trained.model.classes_) == [0, 1]

    trained.model.save(str(tmp_path / "m"))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["preprocess.skops", "state_dict.pt",
                                                                    "torch_model.json"]
    again = load_model(str(tmp_path / "m"))
    assert np.array_equal(again.predict(X), pred) and np.allclose(again.predict_proba(X), proba)


def test_loading_refuses_a_module_that_is_not_a_network(torch_project, tmp_path):
    spec = load_spec(torch_project)
    import pandas as pd

    trained = train_model(spec, pd.read_csv(torch_project / "data.csv"))
    trained.model.save(str(tmp_path / "m"))
    meta = json.loads((tmp_path / "m" / "torch_model.json").read_text())
    meta["module"] = "subprocess:Popen"
    (tmp_path / "m" / "torch_model.json").write_text(json.dumps(meta))
    with pytest.raises(TypeError, match="not a torch.nn.Module subclass"):
        load_model(str(tmp_path / "m"))


def test_regression_predicts_in_target_units(tmp_path):
    proj = write_project(tmp_path / "reg", {"kind": "torch", "params": {"hidden": [16]}, "epochs": 40,
                                            "batch_size": 32, "lr": 0.01}, task="regression")
    spec = load_spec(proj)
    import pandas as pd

    df = pd.read_csv(proj / "data.csv")
    split = split_frame(spec, df)
    trained = train_model(spec, split.train)
    X = coerce_features(split.test[trained.features], trained.numeric, trained.categorical)
    err = np.abs(trained.model.predict(X) - split.test["value"].to_numpy())
    assert err.mean() < 0.2 * split.test["value"].std()  # target scaling undone on predict
    assert not hasattr(trained.model, "classes_")


def test_torch_model_is_registered_checked_and_served(torch_project, workspace):
    from loopml.loop.pipeline import run_pipeline
    from loopml.registry.client import Registry
    from loopml.serve.server import ServerHandle
    from loopml.serve.settings import ServeSettings

    spec = load_spec(torch_project)
    result = run_pipeline(spec, workspace, project_dir=torch_project)
    assert result.version == "1" and result.promoted and result.metrics["accuracy"] > 0.85
    reg = Registry(workspace)
    ref = reg.resolve("tab")
    run = reg.client.get_run(result.run_id)
    assert run.data.params["estimator"] == "loopml.train.mlp:TabularMLP"
    history = reg.client.get_metric_history(result.run_id, "train_loss")
    assert [m.step for m in history] == list(range(len(history))) and len(history) >= 3  # one per epoch
    native = reg.load_native(ref)  # the registry's own check passed already (register() ran it)
    assert type(native).__name__ == "TorchTabularModel"
    import mlflow.models

    flavors = mlflow.models.Model.load(reg._download(ref, str(workspace.home / "dl"))).flavors
    assert "loopml_torch" in flavors and "sklearn" not in flavors  # no pickle anywhere

    with ServerHandle(workspace, ["tab"], ServeSettings(poll_interval_s=60).validate()) as server:
        rows = {"inputs": [{"name": "a", "shape": [2], "datatype": "FP64", "data": [2.0, -2.0]},
                           {"name": "b", "shape": [2], "datatype": "FP64", "data": [-1.0, 1.0]},
                           {"name": "color", "shape": [2], "datatype": "BYTES", "data": ["red", "blue"]}]}
        r = httpx.post(f"{server.url}/v2/models/tab/infer", json=rows, timeout=30)
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert outputs["predict"] == [1, 0]
