"""``loopml optimize NAME VERSION``: convert a registered version to ONNX and adopt it on parity.

A thin shell over :func:`loopml.registry.optimize.optimize_version`: adopted or refused is
an answer, not an error (exit 0 either way, the reason and the parity figures printed);
a version that does not exist, an unreachable registry or an unsafe file is exit 2 with
one line.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.console import Console

from loopml.cli.common import HomeOpt, JsonOpt, TrackingOpt, workspace

console = Console(log_path=False)


def _figures(report: dict) -> str:
    parts = []
    if "probe_rows" in report:
        parts.append(f"{report['probe_rows']} probe rows")
    if "label_mismatches" in report:
        parts.append(f"{report['label_mismatches']} label mismatches")
    if "max_proba_diff" in report:
        parts.append(f"max probability difference {report['max_proba_diff']:.3g}")
    if "max_value_diff" in report:
        parts.append(f"max relative value difference {report['max_value_diff']:.3g}")
    parts.append(f"tolerance {report.get('tolerance', 1e-5):g}")
    return ", ".join(parts)


def _quantization(q: dict) -> str:
    parts = [q.get("reason", "")]
    if "int8_metric" in q:
        parts.append(f"{q['metric']} {q['fp32_metric']:.4g} (FP32) vs {q['int8_metric']:.4g} (INT8) on the {q['evaluated_on']}")
    if "int8_bytes" in q:
        parts.append(f"{q['fp32_bytes']:,} -> {q['int8_bytes']:,} bytes")
    return "; ".join(p for p in parts if p)


def optimize(name: Annotated[str, typer.Argument(help="Registered model name.")],
             version: Annotated[str, typer.Argument(help="Version number or alias (champion, challenger).")],
             quantize: Annotated[bool, typer.Option(
                 "--quantize", help="Also try dynamic INT8; kept only if the metric moves by at most --quantize-tolerance.")] = False,
             quantize_tolerance: Annotated[float, typer.Option(
                 "--quantize-tolerance", min=0.0, help="Largest change of the metric INT8 may cause (absolute).")] = 0.01,
             metric: Annotated[str | None, typer.Option(
                 "--metric", help="Metric of the INT8 gate (default: roc_auc for classifiers, rmse otherwise).")] = None,
             allow_unsafe_pickle: Annotated[bool, typer.Option(
                 "--allow-unsafe-pickle", help="Load pickle/cloudpickle model files, which run arbitrary code (UNSAFE).")] = False,
             home: HomeOpt = None, tracking_uri: TrackingOpt = None, as_json: JsonOpt = False) -> None:
    """Convert a registered version to ONNX; serve it through ONNX Runtime only if its answers match."""
    from loopml.registry.client import Registry
    from loopml.registry.optimize import optimize_version

    ws = workspace(home, tracking_uri)
    reg = Registry(ws, allow_unsafe_pickle=allow_unsafe_pickle or None)
    ref = reg.resolve(name, version)
    t0 = time.perf_counter()
    result = optimize_version(reg, ref, quantize=quantize, quantize_tolerance=quantize_tolerance, metric=metric)
    seconds = time.perf_counter() - t0
    if as_json:
        out = {"model": result.name, "version": result.version, "runtime": result.runtime,
               "adopted": result.adopted, "reason": result.reason, "seconds": round(seconds, 3), **result.report}
        console.print_json(json.dumps(out, default=str))
        return
    if result.adopted:
        console.print(f"{result.name} version {result.version}: [green]adopted ONNX[/] - {result.reason}")
    else:
        console.print(f"{result.name} version {result.version}: [yellow]refused ONNX, stays native[/] - {result.reason}")
    console.print(f"  parity: {_figures(result.report)}; {seconds:.1f} s", highlight=False)
    if "quantization" in result.report:
        console.print(f"  int8: {_quantization(result.report['quantization'])}", highlight=False)
