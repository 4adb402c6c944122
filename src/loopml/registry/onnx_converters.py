"""skl2onnx converters loopml adjusts, so pipelines stay in double precision end to end.

- SimpleImputer on text columns whose marker is NaN (loopml's own preprocessing): skl2onnx
  takes only a string marker there; the same converter runs with :data:`MISSING_STRING`.
- SimpleImputer on numbers in a double graph: IsNaN/Where, because onnxruntime implements
  ``ai.onnx.ml`` Imputer for float only, which would round every number before the trees.
- HistGradientBoosting in double (``ai.onnx.ml`` TreeEnsemble, opset 5), below.

HistGradientBoosting:

skl2onnx 1.20 writes HistGradientBoosting as ``TreeEnsembleClassifier/Regressor``. With a
double input it declares double outputs, which onnxruntime's implementation of those
(deprecated) operators refuses at load ("Type (tensor(double)) of output arg ... does not
match expected type (tensor(float))"), so only the float32 graph loads, and float32
thresholds put rows near a split on the other side: probabilities off by up to 0.02-0.04,
never within the 1e-5 parity gate. ``TreeEnsemble`` (ai.onnx.ml 5, onnxruntime >= 1.20)
is typed by its input: double thresholds, double leaf weights, double sums, the same
comparisons scikit-learn makes (``x <= threshold``, NaN to the side the tree learnt).

This converter writes one ``TreeEnsemble`` node for the raw scores, adds the baseline, and
applies the loss's link with standard operators in double (Sigmoid for binary log-loss,
Softmax for multinomial, Exp for log-link regressors). Float inputs, categorical splits
and other links keep skl2onnx's own converter: parity on the probe set decides.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# What a missing string is fed to ONNX as (string tensors cannot hold a missing value); the
# converted imputers replace it, as scikit-learn's SimpleImputer replaces NaN/None.
MISSING_STRING = "\x00loopml:missing\x00"
ML_OPSET = 5
# skl2onnx 1.20 refuses to write an ai.onnx.ml opset above 3; the node is added under 3 and
# :func:`finish` raises the model's ai.onnx.ml import to 5 once the graph is written.
_WRITTEN_AS = 3
_ORIGINAL: dict[str, Any] = {}


def _trees(model: Any) -> tuple[dict[str, Any], int]:
    """The TreeEnsemble attributes of a fitted HistGradientBoosting model (targets: trees per iteration)."""
    from onnx import numpy_helper as nh

    k = int(model.n_trees_per_iteration_)
    feat, splits, true_ids, true_leaf, false_ids, false_leaf, missing_true = [], [], [], [], [], [], []
    roots, leaf_target, leaf_weight = [], [], []
    for iteration in model._predictors:
        for target, predictor in enumerate(iteration):
            nodes = predictor.nodes
            if np.any(nodes["is_categorical"]):
                raise NotImplementedError("categorical splits")
            leaf_of: dict[int, int] = {}
            node_of: dict[int, int] = {}
            for i in range(len(nodes)):  # number leaves and interior nodes in ensemble-wide order
                if nodes["is_leaf"][i]:
                    leaf_of[i] = len(leaf_target)
                    leaf_target.append(target)
                    leaf_weight.append(float(nodes["value"][i]))
                else:
                    node_of[i] = len(feat) + len(node_of)
            if not node_of:  # a tree that never split: one dummy split, both ways to its leaf
                roots.append(len(feat))
                feat.append(0), splits.append(0.0), missing_true.append(0)
                true_ids.append(leaf_of[0]), true_leaf.append(1), false_ids.append(leaf_of[0]), false_leaf.append(1)
                continue
            roots.append(node_of[0])
            for i in sorted(node_of):
                left, right = int(nodes["left"][i]), int(nodes["right"][i])
                feat.append(int(nodes["feature_idx"][i]))
                splits.append(float(nodes["num_threshold"][i]))
                missing_true.append(int(nodes["missing_go_to_left"][i]))  # true branch = left (x <= t)
                for child, ids, leafs in ((left, true_ids, true_leaf), (right, false_ids, false_leaf)):
                    is_leaf = child in leaf_of
                    ids.append(leaf_of[child] if is_leaf else node_of[child])
                    leafs.append(int(is_leaf))
    attrs = dict(
        tree_roots=roots, nodes_featureids=feat, nodes_splits=nh.from_array(np.asarray(splits, dtype=np.float64)),
        nodes_modes=nh.from_array(np.zeros(len(feat), dtype=np.uint8)),  # BRANCH_LEQ everywhere
        nodes_truenodeids=true_ids, nodes_trueleafs=true_leaf, nodes_falsenodeids=false_ids,
        nodes_falseleafs=false_leaf, nodes_missing_value_tracks_true=missing_true,
        leaf_targetids=leaf_target, leaf_weights=nh.from_array(np.asarray(leaf_weight, dtype=np.float64)),
        n_targets=k, aggregate_function=1, post_transform=0)  # SUM, no transform
    return attrs, k


def _raw_scores(scope: Any, container: Any, model: Any, X: str) -> str:
    from onnx import TensorProto

    attrs, k = _trees(model)
    sums = scope.get_unique_variable_name("tree_sums")
    container.add_node("TreeEnsemble", [X], [sums], op_domain="ai.onnx.ml", op_version=_WRITTEN_AS,
                       name=scope.get_unique_operator_name("TreeEnsemble"), **attrs)
    base = scope.get_unique_variable_name("baseline")
    container.add_initializer(base, TensorProto.DOUBLE, [1, k],
                              np.asarray(model._baseline_prediction, dtype=np.float64).ravel().tolist())
    raw = scope.get_unique_variable_name("raw_scores")
    container.add_node("Add", [sums, base], [raw], name=scope.get_unique_operator_name("Add"))
    return raw


def _is_double(operator: Any) -> bool:
    from skl2onnx.common.data_types import DoubleTensorType

    return isinstance(operator.inputs[0].type, DoubleTensorType)


def convert_classifier(scope: Any, operator: Any, container: Any) -> None:
    from onnx import TensorProto

    model = operator.raw_operator
    loss = type(model._loss).__name__
    classes = np.asarray(model.classes_)
    if not _is_double(operator) or loss not in ("HalfBinomialLoss", "HalfMultinomialLoss") or \
            classes.dtype.kind not in "biuUO" or _has_categorical(model) or \
            container.get_options(model, dict(zipmap=True, raw_scores=False)) != dict(zipmap=False, raw_scores=False):
        return _ORIGINAL["classifier"](scope, operator, container)
    raw = _raw_scores(scope, container, model, operator.inputs[0].full_name)
    proba = operator.outputs[1].full_name
    if loss == "HalfBinomialLoss":
        p1 = scope.get_unique_variable_name("p1")
        container.add_node("Sigmoid", [raw], [p1], name=scope.get_unique_operator_name("Sigmoid"))
        one = scope.get_unique_variable_name("one")
        container.add_initializer(one, TensorProto.DOUBLE, [], [1.0])
        p0 = scope.get_unique_variable_name("p0")
        container.add_node("Sub", [one, p1], [p0], name=scope.get_unique_operator_name("Sub"))
        container.add_node("Concat", [p0, p1], [proba], axis=1, name=scope.get_unique_operator_name("Concat"))
    else:
        container.add_node("Softmax", [raw], [proba], axis=1, name=scope.get_unique_operator_name("Softmax"))
    idx = scope.get_unique_variable_name("argmax")
    container.add_node("ArgMax", [proba], [idx], axis=1, keepdims=0, name=scope.get_unique_operator_name("ArgMax"))
    labels = scope.get_unique_variable_name("classes")
    if classes.dtype.kind in "biu":  # skl2onnx labels booleans as int64
        container.add_initializer(labels, TensorProto.INT64, [len(classes)], classes.astype(np.int64).tolist())
    else:
        container.add_initializer(labels, TensorProto.STRING, [len(classes)], [str(c).encode() for c in classes])
    container.add_node("Gather", [labels, idx], [operator.outputs[0].full_name], axis=0,
                       name=scope.get_unique_operator_name("Gather"))


def convert_regressor(scope: Any, operator: Any, container: Any) -> None:
    model = operator.raw_operator
    link = type(model._loss.link).__name__
    if not _is_double(operator) or link not in ("IdentityLink", "LogLink") or _has_categorical(model):
        return _ORIGINAL["regressor"](scope, operator, container)
    raw = _raw_scores(scope, container, model, operator.inputs[0].full_name)
    out = operator.outputs[0].full_name
    if link == "LogLink":  # poisson, gamma: scikit-learn predicts exp(raw)
        container.add_node("Exp", [raw], [out], name=scope.get_unique_operator_name("Exp"))
    else:
        container.add_node("Identity", [raw], [out], name=scope.get_unique_operator_name("Identity"))


def _has_categorical(model: Any) -> bool:
    return any(np.any(p.nodes["is_categorical"]) for it in model._predictors for p in it)


def finish(proto: Any) -> Any:
    """Import ai.onnx.ml 5 in a model that holds a TreeEnsemble node (see :data:`_WRITTEN_AS`)."""
    if any(n.op_type == "TreeEnsemble" and n.domain == "ai.onnx.ml" for n in proto.graph.node):
        for imp in proto.opset_import:
            if imp.domain == "ai.onnx.ml":
                imp.version = max(imp.version, ML_OPSET)
    return proto


def install() -> None:
    """Route skl2onnx's imputer and HistGradientBoosting conversion through this module (once)."""
    if _ORIGINAL:
        return
    _install_string_imputer()
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from skl2onnx import update_registered_converter
    from skl2onnx._supported_operators import sklearn_operator_name_map
    from skl2onnx.common._registration import _converter_pool, _shape_calculator_pool

    for kind, cls, convert in (("classifier", HistGradientBoostingClassifier, convert_classifier),
                               ("regressor", HistGradientBoostingRegressor, convert_regressor)):
        alias = sklearn_operator_name_map[cls]
        _ORIGINAL[kind] = _converter_pool[alias]
        update_registered_converter(cls, alias, _shape_calculator_pool[alias], convert, overwrite=True,
                                    options=_ORIGINAL[kind].get_allowed_options())


_INSTALLED: list[bool] = []


def _install_string_imputer() -> None:
    """Let skl2onnx convert SimpleImputer on text columns whose missing marker is NaN (loopml's
    own preprocessing): skl2onnx takes only a string marker there. The converter is the same,
    run on a copy of the imputer whose marker is :data:`MISSING_STRING`, which the ONNX
    runtime feeds for a missing string. Every other case goes to skl2onnx's own converter
    unchanged; parity on the probe set (which holds missing strings) still decides."""
    if _INSTALLED:
        return
    import copy

    from sklearn.impute import SimpleImputer
    from skl2onnx import update_registered_converter
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType
    from skl2onnx.operator_converters.imputer_op import convert_sklearn_imputer
    from skl2onnx.shape_calculators.imputer import calculate_sklearn_imputer_output_shapes

    def convert(scope: Any, operator: Any, container: Any) -> None:
        op = operator.raw_operator
        mv = op.missing_values
        if isinstance(operator.inputs[0].type, StringTensorType) and isinstance(mv, float) and mv != mv:
            patched = copy.copy(op)
            patched.missing_values = MISSING_STRING
            operator.raw_operator = patched
            try:
                return convert_sklearn_imputer(scope, operator, container)
            finally:
                operator.raw_operator = op
        if isinstance(operator.inputs[0].type, DoubleTensorType) and _double_fill(op) is not None:
            return _convert_double_imputer(scope, operator, container, _double_fill(op))
        return convert_sklearn_imputer(scope, operator, container)

    update_registered_converter(SimpleImputer, "SklearnSimpleImputer", calculate_sklearn_imputer_output_shapes,
                                convert, overwrite=True)
    # skl2onnx 1.20 passes HistGradientBoosting's missing-value flags as Python/NumPy booleans,
    # which onnx 1.2x with protobuf 7 refuses in an INTS attribute; the same flags as ints.
    from skl2onnx.common import tree_ensemble

    add_node = tree_ensemble.add_node

    def add_node_int_flags(*args: Any, **kwargs: Any) -> Any:
        if "nodes_missing_value_tracks_true" in kwargs:
            kwargs["nodes_missing_value_tracks_true"] = int(kwargs["nodes_missing_value_tracks_true"])
        return add_node(*args, **kwargs)

    tree_ensemble.add_node = add_node_int_flags
    _INSTALLED.append(True)


def _double_fill(imputer: Any) -> Any:
    """The per-column fill values of a numeric SimpleImputer for NaN, or None when it is not one
    (another marker, indicators, or a column it drops because it was empty at fit)."""
    stats = getattr(imputer, "statistics_", None)
    mv = imputer.missing_values
    if stats is None or stats.dtype.kind != "f" or not (isinstance(mv, float) and mv != mv):
        return None
    if np.isnan(stats).any() or getattr(imputer, "add_indicator", False):
        return None
    return stats.astype(np.float64)


def _convert_double_imputer(scope: Any, operator: Any, container: Any, fill: np.ndarray) -> None:
    """NaN -> the column's statistic, in double (onnxruntime implements ai.onnx.ml Imputer for
    float only, which would round every number on the way to the trees)."""
    from onnx import TensorProto

    X = operator.inputs[0].full_name
    stats = scope.get_unique_variable_name("impute_values")
    container.add_initializer(stats, TensorProto.DOUBLE, [1, len(fill)], fill.tolist())
    missing = scope.get_unique_variable_name("is_nan")
    container.add_node("IsNaN", [X], [missing], name=scope.get_unique_operator_name("IsNaN"))
    container.add_node("Where", [missing, stats, X], [operator.outputs[0].full_name],
                       name=scope.get_unique_operator_name("Where"))
