"""Runtime selection and the ONNX runtime, with real skl2onnx/onnxruntime models."""

from __future__ import annotations

import os

import numpy as np
import pytest

from loopml.errors import UnsupportedModelFlavor
from loopml.registry.optimize import optimize_version
from loopml.serve.runtime import ModelRuntime, Rows
from tests.serve.conftest import FEATURES, NUM_SIG, clf_model, numeric_frame
from tests.serve.runtimes.source import FolderSource


@pytest.fixture(scope="module")
def clf():
    return clf_model()


def _rows(n=32):
    X = numeric_frame(n, 9)
    return Rows({c: X[c].tolist() for c in FEATURES}, n)


def test_adopted_onnx_version_answers_like_native(tmp_path, clf):
    src = FolderSource(tmp_path, clf, NUM_SIG, numeric_frame(2, 4))
    native = ModelRuntime(src, src.ref, predict_in_thread=False).load()
    assert optimize_version(src, src.ref).adopted
    onnx = ModelRuntime(src, src.ref, predict_in_thread=False).load()
    assert native.runtime_name == "sklearn" and onnx.runtime_name == "onnx"
    a, b = native.predict_sync(_rows()), onnx.predict_sync(_rows())
    assert np.array_equal(a.predict, b.predict)
    assert np.allclose(a.proba, b.proba, rtol=0, atol=1e-5)


def test_unloadable_onnx_file_falls_back_to_native(tmp_path, clf):
    src = FolderSource(tmp_path, clf, NUM_SIG)
    assert optimize_version(src, src.ref).adopted
    with open(tmp_path / "run" / "onnx" / "model.onnx", "wb") as f:
        f.write(b"not onnx")
    rt = ModelRuntime(src, src.ref, predict_in_thread=False).load()
    assert rt.runtime_name == "sklearn" and "onnx runtime" in rt.fallback_reason


def test_flavor_no_runtime_takes_is_one_clear_error(tmp_path, clf):
    src = FolderSource(tmp_path, clf, NUM_SIG, flavors=("h2o",))
    with pytest.raises(UnsupportedModelFlavor, match=r"model 'm' version 1 has flavors \['h2o'\]"):
        ModelRuntime(src, src.ref).load()


def test_onnx_flavor_model_is_served_by_onnx(tmp_path, clf):
    src = FolderSource(tmp_path, clf, NUM_SIG)
    optimize_version(src, src.ref)
    os.replace(tmp_path / "run" / "onnx" / "model.onnx", tmp_path / "model" / "model.onnx")
    src2 = FolderSource(tmp_path, clf, NUM_SIG, flavors=("onnx", "python_function"))
    import yaml

    with open(tmp_path / "model" / "MLmodel", "w") as f:
        yaml.safe_dump({"flavors": {"onnx": {"data": "model.onnx"}, "python_function": {}}}, f)
    rt = ModelRuntime(src2, src2.ref, predict_in_thread=False).load()
    assert rt.runtime_name == "onnx"
    assert np.array_equal(rt.predict_sync(_rows()).predict, clf.predict(numeric_frame(32, 9)))
