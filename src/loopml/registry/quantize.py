"""Optional dynamic INT8 quantization of an adopted ONNX model, behind an accuracy gate.

``onnxruntime.quantization.quantize_dynamic`` stores the weights of MatMul operators (Gemm,
as torch writes ``nn.Linear``, is rewritten to MatMul + Add first) as INT8 and quantizes their activations at run time: networks shrink ~4x and may
run faster; tree ensembles and scikit-learn's linear operators (``ai.onnx.ml``) have nothing
it quantizes, so it says so and keeps FP32. Exact parity is impossible by design, so the
gate is the metric: the spec's primary metric of the INT8 model may differ from the FP32
ONNX model's by at most ``tolerance`` (absolute), on the holdout when the caller has one
(``loopml run``: the test split and its labels), else on the probe set with the native
model's own answers as the truth (``loopml optimize --quantize``: no labels at hand).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from loopml.serve.runtimes.base import ONNX_FILE

FP32_FILE = "model.fp32.onnx"  # the FP32 graph, kept beside an adopted INT8 model.onnx
TOLERANCE = 0.01


# what quantize_dynamic writes for an operator it quantized
_QUANTIZED_OPS = frozenset({"MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "QAttention", "DynamicQuantizeLSTM"})


def quantize_file(src: str, dst: str) -> int:
    """Write the INT8 graph of ``src`` to ``dst``; returns how many operators were quantized."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = gemm_to_matmul(onnx.load(src))
    if not any(n.op_type in ("MatMul", "Conv", "Attention", "LSTM") for n in model.graph.node):
        return 0  # tree ensembles, ai.onnx.ml linear models: nothing dynamic quantization takes
    tmp = dst + ".in.onnx"
    onnx.save_model(model, tmp)
    try:
        quantize_dynamic(tmp, dst, weight_type=QuantType.QInt8)
    finally:
        os.remove(tmp)
    return sum(n.op_type in _QUANTIZED_OPS for n in onnx.load(dst).graph.node)


def gemm_to_matmul(model: Any) -> Any:
    """Gemm (how torch exports ``nn.Linear``) as MatMul + Add: dynamic quantization takes MatMul
    only. Rewritten only for a constant weight and alpha = beta = 1, no transposed input."""
    from onnx import helper, numpy_helper

    g = model.graph
    # the TorchScript exporter writes an exported module's weights as Constant nodes
    consts = [n for n in g.node if n.op_type == "Constant" and [a.name for a in n.attribute] == ["value"]]
    for n in consts:
        g.initializer.append(numpy_helper.from_array(numpy_helper.to_array(n.attribute[0].t), n.output[0]))
    weights = {t.name: t for t in g.initializer}
    nodes = []
    for node in g.node:
        if node.op_type == "Constant" and node.output[0] in weights:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in weights or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weights[node.input[1]])
        name = node.input[1] + "_matmul"
        g.initializer.append(numpy_helper.from_array(w.T.copy() if attrs.get("transB", 0) else w, name))
        product = node.output[0] + "_product" if len(node.input) > 2 and node.input[2] else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], name], [product], name=node.name + "_matmul"))
        if product != node.output[0]:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=node.name + "_bias"))
    del g.node[:]
    g.node.extend(nodes)
    return model


def _metric(task: str, metric: str, truth: Any, labels: np.ndarray, proba: np.ndarray | None,
            classes: Any) -> float:
    from loopml.evaluate.metrics import classification_metrics, regression_metrics

    if task == "classification":
        values = classification_metrics(truth, labels, proba, list(classes))
    else:
        values = regression_metrics(np.asarray(truth, dtype=np.float64), np.asarray(labels, dtype=np.float64))
    if metric not in values:
        raise KeyError(f"metric '{metric}' is not defined here (have {sorted(values)})")
    return float(values[metric])


def try_quantize(folder: str, native: Any, probe: Any, *, holdout: tuple[Any, Any] | None = None,
                 metric: str | None = None, tolerance: float = TOLERANCE) -> tuple[bool, str, dict]:
    """Quantize ``folder/model.onnx``; when the metric holds, the INT8 graph becomes ``model.onnx``
    and the FP32 one ``model.fp32.onnx``. Returns (adopted, reason, report)."""
    from loopml.evaluate.names import DEFAULT_PRIMARY
    from loopml.serve.runtimes.onnx_runtime import OnnxModel, open_session

    fp32_path = os.path.join(folder, ONNX_FILE)
    int8_path = os.path.join(folder, "model.int8.onnx")
    classes = getattr(native, "classes_", None) if hasattr(native, "predict_proba") else None
    task = "classification" if classes is not None else "regression"
    metric = metric or DEFAULT_PRIMARY[task]
    report: dict[str, Any] = {"metric": metric, "tolerance": tolerance}
    report["quantized_ops"] = quantize_file(fp32_path, int8_path)
    if not report["quantized_ops"]:
        if os.path.exists(int8_path):
            os.remove(int8_path)
        return False, "INT8 refused: nothing in this graph quantizes (no MatMul/Gemm weights); FP32 kept", report
    report["fp32_bytes"], report["int8_bytes"] = os.path.getsize(fp32_path), os.path.getsize(int8_path)
    if holdout is not None:
        X, truth = holdout
        report["evaluated_on"] = f"holdout ({len(truth)} rows with labels)"
    else:
        X = probe
        truth = native.predict(X)
        report["evaluated_on"] = "probe set, the native model's answers as the truth"
    scores = {}
    for kind, path in (("fp32", fp32_path), ("int8", int8_path)):
        labels, proba = OnnxModel(open_session(path)).predict_outputs(X)
        scores[kind] = _metric(task, metric, truth, labels, proba, classes)
    drop = abs(scores["fp32"] - scores["int8"])
    report.update(fp32_metric=scores["fp32"], int8_metric=scores["int8"], metric_change=drop)
    if not drop <= tolerance:
        os.remove(int8_path)
        return False, (f"INT8 refused: {metric} {scores['int8']:.4g} vs {scores['fp32']:.4g} in FP32 "
                       f"(change {drop:.3g} > tolerance {tolerance:g}); FP32 kept"), report
    os.replace(fp32_path, os.path.join(folder, FP32_FILE))
    os.replace(int8_path, fp32_path)
    return True, (f"INT8 adopted: {metric} {scores['int8']:.4g} vs {scores['fp32']:.4g} in FP32 "
                  f"(change {drop:.3g} <= {tolerance:g}); {report['fp32_bytes']} -> {report['int8_bytes']} bytes"), report
