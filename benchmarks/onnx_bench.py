"""ONNX Runtime vs the native scikit-learn runtime, in-process, through loopml's serving runtime.

    python benchmarks/onnx_bench.py [--repeat 2000] [--models NAME,...]

Four models, each registered in a temporary workspace (MLflow on SQLite, skops files):
LogisticRegression on 20 features (StandardScaler in front), RandomForest 100 trees depth 10
and HistGradientBoosting (defaults) on the same 20 features, and the example fraud pipeline
(`loopml new`'s project, trained by `loopml run`'s pipeline). For each: `optimize_version`
(conversion + parity, timed: the cost `serving.onnx: auto` adds to a run), then
`ModelRuntime.predict_sync` on 1 and 64 rows for the native runtime with the compiled linear
path on (the default) and off, and for the ONNX runtime: median and p99 microseconds per
call over ``--repeat`` calls, on the same rows, after a warm-up. Answers are compared on the
probe rows before any time is printed (labels identical, probabilities within 1e-5).

Then the other runtimes (``torch-mlp``: 20-512-512-2 MLP logged with mlflow.pytorch as a
torch.export archive; ``xgb-100`` / ``lgbm-100``: 100-tree classifiers logged with
mlflow.xgboost / mlflow.lightgbm): the native runtime (torch / xgboost / lightgbm) vs ONNX FP32
(adopted on parity) vs ONNX INT8 (dynamic quantization, adopted only within the default
tolerance of the metric), on 1 and 64 rows, with each model's parity figure and INT8 size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def register(ws, name: str, model, example: pd.DataFrame) -> str:
    """Log ``model`` with mlflow.sklearn (skops) to a run and register it, as a user would."""
    import mlflow.sklearn
    import skops.io as sio
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=ws.tracking_uri, registry_uri=ws.tracking_uri)
    exp = client.get_experiment_by_name("bench")
    exp_id = exp.experiment_id if exp else client.create_experiment("bench", artifact_location=(ws.home / "bench").as_uri())
    run = client.create_run(exp_id)
    local = Path(tempfile.mkdtemp(prefix="onnx-bench-model-")) / "model"
    trusted = list(sio.get_untrusted_types(data=sio.dumps(model)))
    mlflow.sklearn.save_model(model, str(local), serialization_format="skops", skops_trusted_types=trusted,
                              input_example=example, pip_requirements=["scikit-learn"])
    client.log_artifacts(run.info.run_id, str(local), "model")
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except Exception:  # noqa: BLE001 - exists already
        pass
    return str(client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id).version)


def timed_calls(runtime, rows, repeat: int) -> tuple[float, float]:
    for _ in range(min(200, repeat)):
        runtime.predict_sync(rows)
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        runtime.predict_sync(rows)
        samples.append((time.perf_counter_ns() - t0) / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.99 * (len(samples) - 1))]


OTHER = ("torch-mlp", "xgb-100", "lgbm-100")


def register_flavor(ws, name: str, save) -> str:
    """``save(path)`` writes an MLflow model folder (mlflow.pytorch / xgboost / lightgbm); registered."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=ws.tracking_uri, registry_uri=ws.tracking_uri)
    exp = client.get_experiment_by_name("bench")
    exp_id = exp.experiment_id if exp else client.create_experiment("bench", artifact_location=(ws.home / "bench").as_uri())
    run = client.create_run(exp_id)
    local = Path(tempfile.mkdtemp(prefix="onnx-bench-model-")) / "model"
    save(str(local))
    client.log_artifacts(run.info.run_id, str(local), "model")
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except Exception:  # noqa: BLE001 - exists already
        pass
    return str(client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id).version)


def other_runtimes(ws, reg, X: pd.DataFrame, y: pd.Series, names: list[str], repeat: int) -> None:
    """PyTorch (mlflow.pytorch, torch.export), XGBoost and LightGBM: native runtime vs ONNX FP32
    vs ONNX INT8 (dynamic quantization; adopted only within serving.quantize_tolerance)."""
    import lightgbm as lgb
    import mlflow.lightgbm
    import mlflow.pytorch
    import mlflow.xgboost
    import torch
    import xgboost as xgb

    from loopml.registry.optimize import optimize_version
    from loopml.serve.runtime import ModelRuntime, Rows

    Xf = X.to_numpy(np.float32)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(),
                              torch.nn.Linear(512, 2)).eval()
    savers = {
        "torch-mlp": lambda p: mlflow.pytorch.save_model(net, p, serialization_format="pt2", input_example=Xf[:4],
                                                         pip_requirements=["torch"]),
        "xgb-100": lambda p: mlflow.xgboost.save_model(
            xgb.XGBClassifier(n_estimators=100, max_depth=6, n_jobs=1).fit(Xf, y), p, input_example=Xf[:3],
            pip_requirements=["xgboost"]),
        "lgbm-100": lambda p: mlflow.lightgbm.save_model(
            lgb.LGBMClassifier(n_estimators=100, n_jobs=1, verbose=-1).fit(Xf, y), p, input_example=Xf[:3],
            serialization_format="skops", pip_requirements=["lightgbm"]),
    }
    print(f"Other runtimes: native vs ONNX FP32 vs ONNX INT8, in-process predict_sync, median / p99 us per call "
          f"over {repeat} calls")
    header = f"{'model':<10} {'rows':>4} | {'runtime':<8} {'native':>15} | {'onnx fp32':>15} | {'onnx int8':>15} | parity fp32"
    print(header)
    print("-" * len(header))
    notes = []
    for name in names:
        ref = reg.resolve(name, register_flavor(ws, name, savers[name]))
        native = ModelRuntime(reg, ref, predict_in_thread=False).load()
        fp32_res = optimize_version(reg, ref)
        fp32 = ModelRuntime(reg, reg.resolve(name, ref.version), predict_in_thread=False).load() if fp32_res.adopted else None
        q_res = optimize_version(reg, ref, quantize=True)
        q = q_res.report.get("quantization") or {}
        int8 = (ModelRuntime(reg, reg.resolve(name, ref.version), predict_in_thread=False).load()
                if q.get("adopted") else None)
        parity = fp32_res.report.get("max_proba_diff", fp32_res.report.get("max_value_diff", float("nan")))
        notes.append(f"  {name:<10} fp32: {fp32_res.reason}\n  {'':<10} int8: {q.get('reason', q_res.reason)}")
        for n in (1, 64):
            rows = Rows({"input-0": Xf[1000:1000 + n]}, n)
            t = [timed_calls(r, rows, repeat) if r is not None else None for r in (native, fp32, int8)]
            cell = [f"{x[0]:>7.0f} / {x[1]:>5.0f}" if x else f"{'-':>15}" for x in t]
            print(f"{name:<10} {n:>4} | {native.runtime_name:<8} {cell[0]} | {cell[1]} | {cell[2]} | {parity:.1e}")
    print("optimize_version outcomes:")
    print("\n".join(notes))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2000)
    ap.add_argument("--models", default="logreg-20,rf-100x10,hgb-default,fraud-demo," + ",".join(OTHER),
                    help="Comma-separated subset of the models.")
    args = ap.parse_args()
    wanted = set(args.models.split(","))

    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from loopml.config import Workspace
    from loopml.demo.data import generate_transactions
    from loopml.demo.project import scaffold_project
    from loopml.loop.pipeline import run_pipeline
    from loopml.registry.client import Registry
    from loopml.registry.optimize import optimize_version
    from loopml.serve.runtime import ModelRuntime, Rows
    from loopml.spec import load_spec

    tmp = Path(tempfile.mkdtemp(prefix="loopml-onnx-bench-"))
    ws = Workspace(tmp / "ws").init()
    reg = Registry(ws)
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(5000, 20)), columns=[f"f{i}" for i in range(20)])
    y = (X["f0"] + X["f1"] * X["f2"] - X["f3"] + rng.normal(size=5000) * 0.5 > 0).astype(int)
    print("training and registering the models ...", file=sys.stderr, flush=True)
    models = {
        "logreg-20": make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y),
        "rf-100x10": RandomForestClassifier(100, max_depth=10, random_state=0, n_jobs=1).fit(X, y),
        "hgb-default": HistGradientBoostingClassifier(random_state=0).fit(X, y),
    }
    feeds = {}
    refs = {}
    models = {k: v for k, v in models.items() if k in wanted}
    others = [k for k in OTHER if k in wanted]
    for name, model in models.items():
        refs[name] = reg.resolve(name, register(ws, name, model, X.head(3)))
        feeds[name] = X.sample(64, random_state=1).reset_index(drop=True)
    if "fraud-demo" in wanted:
        proj = scaffold_project(tmp / "proj", rows=5000)
        spec = load_spec(proj)
        # serving.onnx off: the version starts native, and optimize_version below is timed alone
        spec = spec.model_copy(update={"serving": spec.serving.model_copy(update={"onnx": "off"})})
        result = run_pipeline(spec, ws, project_dir=proj)
        refs["fraud-demo"] = reg.resolve(spec.name, result.version)
        cols = [c["name"] for c in reg.signature(refs["fraud-demo"])["inputs"]]
        feeds["fraud-demo"] = generate_transactions(64, seed=3)[cols]

    print(f"ONNX Runtime vs native, in-process ModelRuntime.predict_sync, median / p99 us per call "
          f"over {args.repeat} calls; cores: {os.cpu_count()}")
    header = (f"{'model':<12} {'rows':>4} | {'native':>15} | {'native, compiled off':>20} | {'onnx':>15} | "
              f"{'onnx speed-up':>13} | parity")
    print(header)
    print("-" * len(header))
    costs = []
    for name, ref in refs.items():
        native = ModelRuntime(reg, ref, predict_in_thread=False).load()
        plain = ModelRuntime(reg, ref, predict_in_thread=False, use_compiled=False).load()
        t0 = time.perf_counter()
        res = optimize_version(reg, ref)
        costs.append((name, time.perf_counter() - t0, res))
        if not res.adopted:
            print(f"{name:<12} ONNX refused: {res.reason}")
            continue
        onnx = ModelRuntime(reg, reg.resolve(ref.name, ref.version), predict_in_thread=False).load()
        assert onnx.runtime_name == "onnx", onnx.fallback_reason
        frame = feeds[name]
        for n in (1, 64):
            rows = Rows({c: frame[c].iloc[:n].tolist() for c in frame.columns}, n)
            a, b = native.predict_sync(rows), onnx.predict_sync(rows)
            same = np.array_equal(a.predict, b.predict) and np.allclose(a.proba, b.proba, rtol=0, atol=1e-5)
            if not same:
                sys.exit(f"{name}: ONNX answers differ from native on {n} rows")
            t_nat, t_plain, t_onnx = (timed_calls(r, rows, args.repeat) for r in (native, plain, onnx))
            mark = "*" if native.compiled is not None else " "
            print(f"{name:<12} {n:>4} | {t_nat[0]:>6.0f}{mark}/ {t_nat[1]:>6.0f} | "
                  f"{t_plain[0]:>10.0f} / {t_plain[1]:>7.0f} | {t_onnx[0]:>7.0f} / {t_onnx[1]:>5.0f} | "
                  f"{t_nat[0] / t_onnx[0]:>12.1f}x | {res.report.get('max_proba_diff', 0):.1e}")
    print("* native served by the compiled linear path (serve/compiled.py)")
    print()
    print("optimize_version (conversion + parity on the probe set + logging to MLflow), seconds:")
    for name, seconds, res in costs:
        print(f"  {name:<12} {seconds:6.2f} s  {'adopted' if res.adopted else 'refused'}: {res.reason}")
    if others:
        print()
        other_runtimes(ws, reg, X, y, others, args.repeat)


if __name__ == "__main__":
    main()
