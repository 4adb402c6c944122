"""ONNX conversion of the models that are not scikit-learn pipelines: PyTorch and boosted trees.

Each ``convert_*`` returns ``(native, proto, probe)``: the native model as the serving runtime
loads it (its ``predict`` / ``predict_proba`` are the reference), the ONNX graph (inputs and
outputs in the shape :class:`~loopml.serve.runtimes.onnx_runtime.OnnxModel` feeds and reads:
labels first, then probabilities, with the classes in the model's metadata), and the probe
rows, typed as the serving path types them. :mod:`loopml.registry.optimize` then runs both
on the probe and adopts ONNX only on parity.

- ``mlflow.pytorch`` models: ``torch.onnx.export`` with the TorchScript-based exporter
  (``dynamo=False``: the dynamo exporter needs ``onnxscript``, which loopml does not install),
  batch dimension dynamic, one input per signature tensor.
- loopml's torch models: the preprocessing through skl2onnx (double, as scikit-learn computes
  it), cast to float32 exactly where ``TorchTabularModel.transform`` casts, the network through
  ``torch.onnx.export``, then softmax in double and argmax -> class, merged into one graph.
- XGBoost / LightGBM (scikit-learn API classes and regressors): ``onnxmltools``.
- ``sentence_transformers`` models: the encoder with its mean pooling and normalisation
  (:func:`loopml.serve.runtimes.text_embedding.export_onnx`); the tokenizer stays in Python.
"""

from __future__ import annotations

from typing import Any

import numpy as np

OPSET = 18
BOOST_OPSET = 15  # the highest onnxmltools 1.16 writes for its tree converters


class NoConverter(Exception):
    """This model cannot be converted (the reason becomes the refusal)."""


def tensor_probe(inputs: list[Any], example: Any, n: int, seed: int = 0) -> Any:
    """Probe rows for a tensor signature: the input example, then ``n`` rows drawn around it
    (its per-element mean, spread at least 1), in the signature's dtype; one array, or a dict
    of named arrays when the signature names its tensors."""
    rng = np.random.default_rng(seed)
    named = isinstance(example, dict) or any(not c.name.startswith("input-") for c in inputs)
    out = {}
    for i, spec in enumerate(inputs):
        seen = example.get(spec.name) if isinstance(example, dict) else (example if i == 0 else None)
        seen = None if seen is None else np.asarray(seen)
        dims = [(seen.shape[j + 1] if seen is not None and seen.ndim > j + 1 else 1) if d == -1 else d
                for j, d in enumerate(spec.shape[1:])]
        center = seen.mean(axis=0) if seen is not None and len(seen) else 0.0
        spread = np.maximum(seen.std(axis=0), 1.0) if seen is not None and len(seen) > 1 else 1.0
        draws = rng.normal(size=(n, *dims)) * spread + center
        dt = spec.dtype
        if dt.kind in "iu":
            draws = np.round(draws)
        elif dt.kind == "b":
            draws = draws > center
        rows = draws.astype(dt)
        out[spec.name] = np.concatenate([seen.astype(dt), rows]) if seen is not None and len(seen) else rows
    return out if named else out[inputs[0].name]


# -- PyTorch ---------------------------------------------------------------------------------

def export_module(module: Any, examples: list[np.ndarray], names: list[str]) -> Any:
    """The ONNX graph of an ``nn.Module`` (eager, TorchScript or an exported program's module)."""
    import io

    import onnx
    import torch

    for p in module.parameters():
        p.requires_grad_(False)  # the tracer inlines an exported module's weights as constants

    class Traced(torch.nn.Module):
        # The exporter calls train(False) on the module and its children, which an exported
        # program's module refuses; holding it outside the children keeps it out of that call.
        def __init__(self) -> None:
            super().__init__()
            object.__setattr__(self, "inner", module)

        def forward(self, *args: Any) -> Any:
            return self.inner(*args)

    try:
        module.eval()
        target = module  # eager and TorchScript modules export as they are
    except NotImplementedError:
        target = Traced()
    f = io.BytesIO()
    args = tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in examples)
    torch.onnx.export(target, args, f, dynamo=False, input_names=names, output_names=["output"],
                      dynamic_axes={**{n: {0: "n"} for n in names}, "output": {0: "n"}}, opset_version=OPSET)
    return onnx.load_from_string(f.getvalue())


def convert_pytorch(registry: Any, ref: Any, info: Any, probe_rows: int) -> tuple[Any, Any, Any]:
    from loopml.serve.runtimes.torch_runtime import TorchRuntime
    from loopml.serve.tensors import read_tensor_signature

    tensors = read_tensor_signature((registry.signature(ref) or {}).get("inputs") or [])
    if tensors is None:
        raise NoConverter("a PyTorch model needs a tensor signature to export its inputs")
    inputs = tensors[0]
    native = TorchRuntime(registry, ref, info).load().model_
    probe = tensor_probe(inputs, registry.input_example(ref), probe_rows)
    arrays = list(probe.values()) if isinstance(probe, dict) else [probe]
    examples = [a[:2].astype(np.float32) if a.dtype.kind == "f" else a[:2] for a in arrays]
    return native, export_module(native.module, examples, [c.name for c in inputs]), probe


def convert_tabular_torch(tab: Any, inputs: list[dict]) -> Any:
    """One graph for a loopml ``TorchTabularModel``: preprocessing, cast, network, head."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    from loopml.registry import onnx_converters

    onnx_converters.install()
    numeric = ("double", "float", "long", "integer", "boolean")
    types = [(c["name"], DoubleTensorType([None, 1]) if c.get("type") in numeric else StringTensorType([None, 1]))
             for c in inputs]
    try:
        pre = to_onnx(tab.preprocess, initial_types=types, target_opset={"": OPSET, "ai.onnx.ml": 3})
    except Exception as e:  # noqa: BLE001 - skl2onnx raises many kinds
        raise NoConverter(f"skl2onnx cannot convert its preprocessing: {type(e).__name__}: {e}") from None
    width = int(tab.preprocess.transform(_one_row(inputs)).shape[1])
    net = export_module(tab.module, [np.zeros((2, width), np.float32)], ["features"])
    pre_out = pre.graph.output[0].name
    pre.graph.node.append(helper.make_node("Cast", [pre_out], ["features_f"], to=TensorProto.FLOAT))
    pre.graph.output.append(helper.make_tensor_value_info("features_f", TensorProto.FLOAT, [None, width]))
    pre.ir_version = net.ir_version = min(pre.ir_version, net.ir_version)
    merged = onnx.compose.merge_models(pre, net, io_map=[("features_f", "features")], outputs=["output"])
    versions: dict[str, int] = {}
    for imp in merged.opset_import:  # merge_models may list the default domain twice
        versions[imp.domain] = max(versions.get(imp.domain, 0), imp.version)
    del merged.opset_import[:]
    merged.opset_import.extend(helper.make_opsetid(d, v) for d, v in versions.items())
    g = merged.graph
    g.node.append(helper.make_node("Cast", ["output"], ["logits_d"], to=TensorProto.DOUBLE))
    del g.output[:]
    if tab.task == "classification":
        classes = np.asarray(tab.classes_)
        labels = classes.astype(np.int64) if classes.dtype.kind in "biu" else classes.astype(object)
        g.initializer.append(numpy_helper.from_array(labels, "class_labels"))
        g.node.extend([helper.make_node("Softmax", ["logits_d"], ["proba"], axis=1),
                       helper.make_node("ArgMax", ["output"], ["best"], axis=1, keepdims=0),
                       helper.make_node("Gather", ["class_labels", "best"], ["label"], axis=0)])
        g.output.extend([helper.make_tensor_value_info("label", TensorProto.INT64 if labels.dtype.kind == "i"
                                                       else TensorProto.STRING, [None]),
                         helper.make_tensor_value_info("proba", TensorProto.DOUBLE, [None, len(classes)])])
    else:
        g.initializer.extend([numpy_helper.from_array(np.array(0, np.int64), "first"),
                              numpy_helper.from_array(np.array(tab.y_std, np.float64), "y_std"),
                              numpy_helper.from_array(np.array(tab.y_mean, np.float64), "y_mean")])
        g.node.extend([helper.make_node("Gather", ["logits_d", "first"], ["raw"], axis=1),
                       helper.make_node("Mul", ["raw", "y_std"], ["scaled"]),
                       helper.make_node("Add", ["scaled", "y_mean"], ["value"])])
        g.output.append(helper.make_tensor_value_info("value", TensorProto.DOUBLE, [None]))
    return merged


def _one_row(inputs: list[dict]) -> Any:
    import pandas as pd

    sample = {"double": 0.0, "float": 0.0, "long": 0, "integer": 0, "boolean": False}
    return pd.DataFrame({c["name"]: [sample.get(c.get("type"), "a")] for c in inputs})


# -- XGBoost / LightGBM ------------------------------------------------------------------------

def convert_boost(native: Any, width: int, flavor: str) -> Any:
    """``onnxmltools`` graph of an XGBoost / LightGBM scikit-learn-API model on a float [n, width]
    input (both libraries compare float32 features; parity decides whether that holds)."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    est = getattr(native, "estimator", native)
    if not hasattr(est, "get_params"):
        raise NoConverter(f"only {flavor}'s scikit-learn API models (e.g. {'XGB' if flavor == 'xgboost' else 'LGBM'}"
                          "Classifier) convert; this is a raw Booster")
    types = [("X", FloatTensorType([None, width]))]
    try:
        if flavor == "xgboost":
            return onnxmltools.convert_xgboost(est, initial_types=types, target_opset=BOOST_OPSET)
        return onnxmltools.convert_lightgbm(est, initial_types=types, target_opset=BOOST_OPSET, zipmap=False)
    except Exception as e:  # noqa: BLE001 - onnxmltools raises many kinds
        raise NoConverter(f"onnxmltools cannot convert it: {type(e).__name__}: {' '.join(str(e).split())[:200]}") \
            from None


# -- text embeddings ---------------------------------------------------------------------------

TEXT_PROBES = 48  # texts, not rows of numbers: each is a full transformer pass on both sides


def convert_text(registry: Any, ref: Any, info: Any) -> tuple[Any, Any, Any]:
    from loopml.serve.runtimes.text_embedding import TextEmbeddingRuntime, export_onnx, probe_texts

    native = TextEmbeddingRuntime(registry, ref, info).load().model_
    return native, export_onnx(native, OPSET), probe_texts(registry.input_example(ref), TEXT_PROBES)
