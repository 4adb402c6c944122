"""ONNX as the serving fast path: convert a version, check parity, adopt or refuse.

:func:`optimize_version` converts a registered model to ONNX (scikit-learn pipelines with
skl2onnx here; PyTorch, loopml's torch models, XGBoost and LightGBM in
:mod:`loopml.registry.onnx_models`), logs the ONNX model beside the native one (``onnx/`` in
the version's run: ``model.onnx``, ``model.onnx.data`` when ONNX keeps weights apart, and
``parity.json``), and adopts it (tag ``loopml.runtime=onnx``) only when, on a probe set (the
version's input example plus rows synthesised from its signature and training profile, see
:mod:`loopml.registry.probes`), the labels are identical and the probabilities (or regression
values) within 1e-5 of the native model's. Anything else tags ``loopml.runtime=native`` and
``loopml.onnx_refused=<why>``; the native model keeps serving. Conversion never raises for a
model it cannot take: it says why. Optional INT8 on top: :mod:`loopml.registry.quantize`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loopml.registry.onnx_converters import MISSING_STRING  # what a missing string is fed to ONNX as
from loopml.registry.probes import _profile, probe_frame  # noqa: F401 - probe_frame is part of this module's API
from loopml.serve.runtimes.base import ONNX_ARTIFACT_PATH, ONNX_FILE, ONNX_REFUSED_TAG, RUNTIME_TAG

PRECISION_TAG = "loopml.onnx_precision"  # "fp32", or "int8" when quantization was adopted

TOLERANCE = 1e-5
PROBE_ROWS = 512
# Above this size ONNX keeps tensors in model.onnx.data (protobuf files stop at 2 GB).
EXTERNAL_DATA_BYTES = 256 * 1024 * 1024
_NUMERIC = ("double", "float", "long", "integer", "boolean")


@dataclass
class OptimizeResult:
    name: str
    version: str
    adopted: bool
    reason: str
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def runtime(self) -> str:
        return "onnx" if self.adopted else "native"


class Refused(Exception):
    """Why ONNX is not adopted for this version (becomes ``loopml.onnx_refused``)."""


def optimize_version(registry: Any, ref: Any, *, probe_rows: int = PROBE_ROWS,
                     external_data_bytes: int = EXTERNAL_DATA_BYTES, quantize: bool = False,
                     quantize_tolerance: float = 0.01, holdout: tuple[Any, Any] | None = None,
                     metric: str | None = None) -> OptimizeResult:
    """Convert ``ref`` to ONNX, log it and its parity report, and adopt it only on parity.

    ``quantize``: then try dynamic INT8 (:mod:`loopml.registry.quantize`), kept only when
    ``metric`` (the task's default primary metric when None) moves by at most
    ``quantize_tolerance`` on ``holdout`` (X, y), else on the probe set; a refused INT8 keeps
    the FP32 ONNX model and the report says why. Errors of the registry itself (unavailable,
    unsafe file) propagate; everything about the model (flavor, conversion, parity) ends in a
    refusal with the reason, tagged on the version."""
    from loopml.errors import RegistryUnavailable, UnsafeModelFormat

    report: dict[str, Any] = {"tolerance": TOLERANCE}
    quant = {"tolerance": quantize_tolerance, "holdout": holdout, "metric": metric} if quantize else None
    try:
        adopted_reason = _convert_and_compare(registry, ref, report, probe_rows, external_data_bytes, quant)
        adopted = True
    except (RegistryUnavailable, UnsafeModelFormat):
        raise
    except Refused as e:
        adopted, adopted_reason = False, str(e)
    except Exception as e:  # noqa: BLE001 - a converter bug is a refusal, never a failed run
        adopted, adopted_reason = False, f"conversion failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
    report.update(adopted=adopted, reason=adopted_reason)
    if report.get("logged"):
        with tempfile.TemporaryDirectory(prefix="loopml-parity-") as tmp:
            with open(os.path.join(tmp, "parity.json"), "w", encoding="utf-8") as f:
                json.dump(report, f, indent=2, default=str)
            registry.log_run_artifacts(ref, tmp, ONNX_ARTIFACT_PATH)
    if adopted:
        precision = "int8" if (report.get("quantization") or {}).get("adopted") else "fp32"
        registry.set_version_tags(ref, {RUNTIME_TAG: "onnx", PRECISION_TAG: precision})
        registry.delete_version_tag(ref, ONNX_REFUSED_TAG)
    else:
        registry.set_version_tags(ref, {RUNTIME_TAG: "native", ONNX_REFUSED_TAG: adopted_reason})
    return OptimizeResult(ref.name, str(ref.version), adopted, adopted_reason, report)


def optimize_quietly(registry: Any, ref: Any, on_step: Any = None, **options: Any) -> OptimizeResult | None:
    """:func:`optimize_version` for ``loopml run`` (``serving.onnx: auto``): reports through
    ``on_step`` and never raises. A version it could not optimize simply stays native (None)."""
    import time

    t0 = time.perf_counter()
    try:
        result = optimize_version(registry, ref, **options)
    except Exception as e:  # noqa: BLE001 - a registry hiccup here must not fail the run
        if on_step is not None:
            on_step("register", f"ONNX not tried ({type(e).__name__}: {' '.join(str(e).split())[:200]}); serving stays native")
        return None
    if on_step is not None:
        what = "ONNX adopted" if result.adopted else "ONNX refused, stays native"
        on_step("register", f"{what} in {time.perf_counter() - t0:.1f} s: {result.reason}")
    return result


def _convert_and_compare(registry: Any, ref: Any, report: dict, probe_rows: int, external_data_bytes: int,
                         quant: dict | None = None) -> str:
    from loopml.serve.runtimes.onnx_runtime import OnnxModel, open_session

    model, proto, probe = _converted(registry, ref, probe_rows)
    report["probe_rows"] = len(next(iter(probe.values()))) if isinstance(probe, dict) else len(probe)
    with tempfile.TemporaryDirectory(prefix="loopml-onnx-") as tmp:
        folder = os.path.join(tmp, ONNX_ARTIFACT_PATH)
        save(proto, folder, external_data_bytes)
        session = open_session(os.path.join(folder, ONNX_FILE))
        # a text model's graph is its encoder: the model's own tokenizer feeds it
        with_session = getattr(model, "with_session", None)
        onnx_out = (with_session(session) if with_session else OnnxModel(session)).predict_outputs(probe)
        try:
            reason = compare(model, probe, onnx_out, report)
            if quant is not None and with_session is not None:
                report["quantization"] = {"adopted": False, "reason": "INT8 refused: not offered for text embeddings"}
                reason = f"{reason}; INT8 refused: not offered for text embeddings"
            elif quant is not None:
                from loopml.registry.quantize import try_quantize

                try:
                    ok, why, qreport = try_quantize(folder, model, probe, holdout=quant["holdout"],
                                                    metric=quant["metric"], tolerance=quant["tolerance"])
                except Exception as e:  # noqa: BLE001 - a quantizer failure keeps the FP32 model, with the reason
                    ok, why, qreport = False, f"INT8 refused: quantization failed: {type(e).__name__}: {e}"[:300], {}
                report["quantization"] = {**qreport, "adopted": ok, "reason": why}
                reason = f"{reason}; {why}"
            return reason
        finally:  # logged whether adopted or not: the report points at what was compared
            report["files"] = sorted(os.listdir(folder))
            registry.log_run_artifacts(ref, folder, ONNX_ARTIFACT_PATH)
            report["logged"] = True


def _converted(registry: Any, ref: Any, probe_rows: int) -> tuple[Any, Any, Any]:
    """(native model, ONNX graph with loopml's metadata, probe rows) by the version's flavor."""
    from loopml.registry import onnx_models
    from loopml.serve.runtimes.base import model_info

    info = model_info(registry, ref)
    flavors = info.flavors
    inputs = [c for c in (registry.signature(ref) or {}).get("inputs") or [] if c.get("name")]
    try:
        if "sklearn" in flavors or "loopml_torch" in flavors:
            if not inputs:
                raise Refused("no named-column signature to build the ONNX inputs from")
            model = registry.load_native(ref)
            if "loopml_torch" in flavors:
                proto = onnx_models.convert_tabular_torch(model, inputs)
            else:
                proto = convert(model, inputs)
            probe = probe_frame(inputs, registry.input_example(ref), _profile(registry, ref), probe_rows)
        elif "pytorch" in flavors:
            model, proto, probe = onnx_models.convert_pytorch(registry, ref, info, probe_rows)
        elif "xgboost" in flavors or "lightgbm" in flavors:
            model, proto, probe = _converted_boost(registry, ref, info, inputs, probe_rows)
        elif "sentence_transformers" in flavors:
            model, proto, probe = onnx_models.convert_text(registry, ref, info)
        else:
            raise Refused(f"no ONNX converter for flavors {sorted(flavors)} (loopml converts scikit-learn, "
                          "PyTorch, XGBoost, LightGBM and sentence-transformers models)")
    except onnx_models.NoConverter as e:
        raise Refused(str(e)) from None
    _add_metadata(proto, getattr(model, "classes_", None) if hasattr(model, "predict_proba") else None)
    return model, proto, probe


def _converted_boost(registry: Any, ref: Any, info: Any, inputs: list[dict], probe_rows: int) -> tuple[Any, Any, Any]:
    from loopml.registry import onnx_models
    from loopml.serve.runtimes.boost_runtime import BoostRuntime
    from loopml.serve.tensors import read_tensor_signature

    model = BoostRuntime(registry, ref, info).load().model_
    flavor = "xgboost" if "xgboost" in info.flavors else "lightgbm"
    tensors = read_tensor_signature((registry.signature(ref) or {}).get("inputs") or [])
    if tensors is not None:
        probe = onnx_models.tensor_probe(tensors[0], registry.input_example(ref), probe_rows)
        width = int(np.prod(tensors[0][0].shape[1:]))
    elif inputs and all(c.get("type") in _NUMERIC for c in inputs):
        probe = probe_frame(inputs, registry.input_example(ref), _profile(registry, ref), probe_rows)
        width = len(inputs)
    else:
        raise Refused("a boosted-tree model converts with an all-numeric signature (columns or one tensor)")
    return model, onnx_models.convert_boost(model.model, width, flavor), probe


def _add_metadata(proto: Any, classes: Any) -> None:
    meta = {"loopml.missing_string": MISSING_STRING}
    if classes is not None:
        meta["loopml.classes"] = json.dumps(np.asarray(classes).tolist())
    have = {p.key for p in proto.metadata_props}
    for k, v in meta.items():
        if k not in have:
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v


def compare(model: Any, probe: Any, onnx_out: tuple, report: dict) -> str:
    """Parity of the ONNX outputs with the native model on ``probe``: fills ``report``, raises
    :class:`Refused` when labels differ or values are further apart than the tolerance."""
    labels, proba = onnx_out
    rows = report.get("probe_rows", len(labels))
    classes = getattr(model, "classes_", None)
    native = np.asarray(model.predict(probe))
    if classes is not None and hasattr(model, "predict_proba"):
        native_proba = np.asarray(model.predict_proba(probe), dtype=np.float64)
        mismatched = int(np.sum(native != labels))
        diff = float(np.max(np.abs(native_proba - proba))) if proba is not None and proba.shape == native_proba.shape \
            else float("inf")
        report.update(label_mismatches=mismatched, max_proba_diff=diff)
        if mismatched:
            raise Refused(f"labels differ from the native model on {mismatched} of {rows} probe rows")
        if not diff <= TOLERANCE:
            raise Refused(f"probabilities differ from the native model by up to {diff:.3g} (> {TOLERANCE:g})")
        return f"parity on {rows} probe rows (labels identical, probabilities within {diff:.2g})"
    diff = float(np.max(np.abs(native.astype(np.float64) - np.asarray(labels, dtype=np.float64)) /
                        np.maximum(1.0, np.abs(native.astype(np.float64)))))
    report.update(max_value_diff=diff)
    if not diff <= TOLERANCE:
        raise Refused(f"predictions differ from the native model by up to {diff:.3g} (> {TOLERANCE:g}, relative)")
    return f"parity on {rows} probe rows (values within {diff:.2g})"


def convert(model: Any, inputs: list[dict]) -> Any:
    """The ONNX graph of a fitted pipeline: one [n, 1] input per signature column (numbers and
    booleans as doubles, so tree thresholds compare exactly as in scikit-learn; text as
    strings), or one [n, k] double matrix for an all-numeric model that takes a plain matrix.
    Raises :class:`Refused` with skl2onnx's reason when it cannot convert."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    from skl2onnx.common.data_types import FloatTensorType
    import onnxruntime as ort

    from loopml.registry import onnx_converters

    onnx_converters.install()  # text imputers, double imputers, HistGradientBoosting in double

    numeric = all(c.get("type") in _NUMERIC for c in inputs)
    attempts = []
    # doubles first (thresholds compare exactly as in scikit-learn); float32 next, for
    # converters that only write float graphs, and parity decides
    for tensor in (DoubleTensorType, FloatTensorType):
        if numeric and not _selects_by_name(model):
            attempts.append([("X", tensor([None, len(inputs)]))])  # one tensor: fewer copies per call
        attempts.append([(c["name"], tensor([None, 1]) if c.get("type") in _NUMERIC else StringTensorType([None, 1]))
                         for c in inputs])
    # classifiers: probabilities as a tensor, not a list of maps (regressors take no such option)
    options = {id(model): {"zipmap": False}} if hasattr(model, "predict_proba") else None
    errors = []
    for types in attempts:
        try:
            proto = to_onnx(model, initial_types=types, options=options,
                            target_opset={"": 18, "ai.onnx.ml": 3})
            proto = onnx_converters.finish(proto)
            ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
            break
        except Exception as e:  # noqa: BLE001 - skl2onnx raises many kinds; the reason is what matters
            errors.append(f"{type(e).__name__}: {' '.join(str(e).split())[:200]}")
    else:
        raise Refused("skl2onnx cannot convert it: " + errors[-1])
    return proto


def _selects_by_name(model: Any) -> bool:
    steps = [s for _, s in getattr(model, "steps", [])] or [model]
    return type(steps[0]).__name__ == "ColumnTransformer"


def save(proto: Any, folder: str, external_data_bytes: int = EXTERNAL_DATA_BYTES) -> None:
    """Write ``model.onnx`` into ``folder``; a model larger than ``external_data_bytes`` keeps
    its tensors in ``model.onnx.data`` beside it (the two travel together)."""
    import onnx

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, ONNX_FILE)
    if proto.ByteSize() > external_data_bytes:
        from onnx import numpy_helper

        for t in proto.graph.initializer:  # only raw_data tensors move out: store them raw
            if not t.HasField("raw_data"):
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t), t.name))
        onnx.save_model(proto, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=ONNX_FILE + ".data", size_threshold=1024)  # shapes stay inline
    else:
        onnx.save_model(proto, path)
