"""PyTorch: loopml's own torch models and models logged with ``mlflow.pytorch``.

- ``loopml_torch`` (loopml's torch trainer, ``train/torch_model.py``): state dict + skops
  preprocessing, loaded by the registry without unpickling; one preprocessing pass and one
  forward pass give both labels and probabilities (the estimator surface would run two).
- ``pytorch`` (``mlflow.pytorch``): a ``torch.export`` archive (``model.pt2``, MLflow's default
  outside Databricks; MLflow's loader checks it holds no pickle payload), a TorchScript file
  (``model.pth`` written by ``torch.jit.save``: its code is TorchScript, not Python pickle), or a
  pickled ``nn.Module``, which runs arbitrary code when loaded and is refused unless unsafe
  pickle is allowed, as for scikit-learn.

Serving predicts each model's batches in one thread; on a few shared cores more intra-op
threads only contend, so loading sets ``torch.set_num_threads`` to ``LOOPML_TORCH_THREADS``
(default 1), as the ONNX session uses one intra-op thread.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from typing import Any

import numpy as np

from loopml.errors import UnsafeModelFormat
from loopml.serve.runtimes.base import ModelInfo, Runtime

TORCH_FLAVORS = ("loopml_torch", "pytorch")


def serving_threads() -> None:
    import torch

    want = int(os.environ.get("LOOPML_TORCH_THREADS", "1") or 1)
    if torch.get_num_threads() != want:  # process-wide: serving processes hold models, not training
        torch.set_num_threads(want)


class TorchModel:
    """An ``nn.Module`` (eager, exported or TorchScript) behind ``predict_outputs``.

    Inputs: one array, a dict of named arrays (passed positionally in signature order), or a
    DataFrame (its values as one matrix). Floating inputs are cast to the module's parameter
    dtype (a float64 input example is common; float32 weights are the norm). The output is
    the module's first tensor as float64, (n,) when it has one column."""

    def __init__(self, module: Any) -> None:
        import torch

        self.module = module
        self.torch = torch
        params = list(module.parameters()) if hasattr(module, "parameters") else []
        self.float_dtype = params[0].dtype if params and params[0].is_floating_point() else torch.float32
        self.fixed_batch = fixed_batch(module)

    def _tensor(self, x: Any) -> Any:
        arr = np.ascontiguousarray(x.to_numpy() if hasattr(x, "to_numpy") else x)
        if arr.dtype.kind == "O":
            raise ValueError("a PyTorch model takes numbers, not text")
        t = self.torch.from_numpy(arr)
        return t.to(self.float_dtype) if t.is_floating_point() else t

    def predict_outputs(self, X: Any) -> tuple[np.ndarray, None]:
        args = [self._tensor(v) for v in X.values()] if isinstance(X, dict) else [self._tensor(X)]
        n, k = len(args[0]), self.fixed_batch
        if k and n != k and n % k == 0:  # a program exported for k rows: k at a time, same answers
            out = self.torch.cat([self._forward([a[i:i + k] for a in args]) for i in range(0, n, k)])
        else:
            out = self._forward(args)
        arr = out.detach().numpy().astype(np.float64, copy=False)
        return (arr.ravel() if arr.ndim == 2 and arr.shape[1] == 1 else arr), None

    def _forward(self, args: list) -> Any:
        try:
            with self.torch.inference_mode():
                out = self.module(*args)
        # shape or dtype mismatches surface as RuntimeError, an exported program's shape guards
        # as AssertionError: either way the input's fault, not the server's
        except (RuntimeError, AssertionError) as e:
            raise ValueError(" ".join(str(e).split())[:300]) from None
        return out[0] if isinstance(out, (tuple, list)) else out

    def predict(self, X: Any) -> np.ndarray:
        return self.predict_outputs(X)[0]


def fixed_batch(module: Any) -> int | None:
    """The batch size a ``torch.export`` program was specialised to, or None when its batch
    dimension is dynamic (or the module is not an exported program). ``mlflow.pytorch`` exports
    with the input example: logged with a one-row example, the program takes exactly one row."""
    import torch

    if not isinstance(module, torch.fx.GraphModule):  # eager or TorchScript: no exported shapes
        return None
    for node in module.graph.nodes:
        if node.op == "placeholder":  # the first user input decides
            shape = getattr(node.meta.get("val"), "shape", None)
            return int(shape[0]) if shape is not None and len(shape) and type(shape[0]) is int else None
    return None


class TabularTorchModel:
    """loopml's :class:`~loopml.train.torch_model.TorchTabularModel` with one pass for both
    outputs; the same arithmetic as its ``predict`` and ``predict_proba``."""

    def __init__(self, tab: Any) -> None:
        self.tab = tab
        self.classes_ = getattr(tab, "classes_", None)

    def predict_outputs(self, X: Any) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        out = self.tab._forward(X)
        if self.tab.task != "classification":
            return out[:, 0].astype(np.float64) * self.tab.y_std + self.tab.y_mean, None
        p = torch.softmax(torch.from_numpy(out).double(), dim=1).numpy()
        return self.classes_[np.argmax(out, axis=1)], p / p.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        return self.predict_outputs(X)[0]

    def predict_proba(self, X: Any) -> np.ndarray:
        proba = self.predict_outputs(X)[1]
        if proba is None:
            raise AttributeError("predict_proba: a regression model has no class probabilities")
        return proba


def load_pytorch_folder(folder: str, name: str, version: str, allow_unsafe_pickle: bool) -> Any:
    """The ``nn.Module`` of an ``mlflow.pytorch`` model folder (its ``data`` directory)."""
    import torch

    pt2 = os.path.join(folder, "model.pt2")
    if os.path.exists(pt2):
        # MLflow's own loader refuses an archive with pickle payloads (unless its
        # MLFLOW_ALLOW_PICKLE_DESERIALIZATION is set): the check is MLflow's, so is the call
        import mlflow.pytorch

        return mlflow.pytorch.load_model(os.path.dirname(folder.rstrip("/")))
    path = os.path.join(folder, "model.pth")
    if is_torchscript(path):
        return torch.jit.load(path, map_location="cpu")
    if not allow_unsafe_pickle:
        raise UnsafeModelFormat(name, version, "a pickled torch.nn.Module")
    import importlib

    with open(os.path.join(folder, "pickle_module_info.txt"), encoding="utf-8") as f:
        pickle_module = importlib.import_module(f.read().strip())
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=pickle_module)


def is_torchscript(path: str) -> bool:
    """A ``torch.jit.save`` archive holds TorchScript source under ``code/``; ``torch.save`` of a
    module holds only ``data.pkl`` and tensors."""
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


class TorchRuntime(Runtime):
    runtime_name = "torch"

    @classmethod
    def takes(cls, info: ModelInfo) -> bool:
        return any(f in info.flavors for f in TORCH_FLAVORS)

    def load(self) -> "TorchRuntime":
        serving_threads()
        if "loopml_torch" in self.info.flavors:
            # the registry reads it without unpickling (weights_only + skops)
            self.model_ = TabularTorchModel(self.source.load_native(self.ref))
            return self
        allow = bool(getattr(self.source, "allow_unsafe_pickle", False))
        with tempfile.TemporaryDirectory(prefix="loopml-torch-") as tmp:
            local = self.source.download(self.ref, tmp)
            data = self.info.flavors["pytorch"].get("model_data", "data")
            module = load_pytorch_folder(os.path.join(local, data), self.ref.name, str(self.ref.version), allow)
        try:
            module.eval()
        except (AttributeError, NotImplementedError):  # an exported program's module has no train mode
            pass
        self.model_ = TorchModel(module)
        if self.model_.fixed_batch:
            import logging

            logging.getLogger("loopml.serve").warning(
                "model '%s' version %s was exported by torch.export for batches of exactly %d row(s) (its input "
                "example's size): batches are split into %d-row calls; log it with an input example of 2+ rows "
                "for a dynamic batch", self.ref.name, self.ref.version, self.model_.fixed_batch, self.model_.fixed_batch)
        return self
