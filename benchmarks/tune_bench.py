"""Tuning on Ray Tune vs a plain sequential loop over the same sampled configurations.

Two searches on generated tabular data (tests/train/conftest.tabular_frame):

- scikit-learn: RandomForestClassifier, n_estimators x max_depth x min_samples_leaf, 16 trials,
  no scheduler (one report per trial), 6,000 rows;
- torch: loopml's MLP, lr x hidden x batch_size, 8 trials of 8 epochs, ASHA on the per-epoch
  reports, 6,000 rows.

"Ours" is :func:`loopml.train.tune.run_tuning` (the path ``loopml tune`` takes: Ray Tune trials
of one CPU each, every trial an MLflow child run logged from the driver); the anchor runs the
very configurations Tune sampled, one after another in this process with the same trial
function (:func:`loopml.train.tune.run_trial`) and no scheduler, nothing logged. Printed side by
side from one run: seconds, trials per minute and the best validation metric each found. Ray's
start-up is timed apart (a running cluster pays it once).

Run: ``make bench-tune`` (``.venv/bin/python benchmarks/tune_bench.py``). Needs root: Ray runs
inside a private network namespace (``unshare -n``), as in tests/integration/ray_job.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CASES = {
    "sklearn RandomForest, 16 trials": (
        {"estimator": "sklearn.ensemble.RandomForestClassifier", "params": {}},
        {"search_space": {"n_estimators": {"type": "randint", "low": 20, "high": 200},
                          "max_depth": {"type": "randint", "low": 2, "high": 12},
                          "min_samples_leaf": {"choice": [1, 2, 5, 10]}},
         "num_samples": 16, "scheduler": "none"}),
    "torch MLP 8 epochs, 8 trials, ASHA": (
        {"kind": "torch", "params": {"hidden": [16]}, "epochs": 8, "batch_size": 64, "early_stopping": None},
        {"search_space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 3e-2},
                          "hidden": {"choice": [[16], [64], [64, 32]]},
                          "batch_size": {"choice": [32, 64, 128]}},
         "num_samples": 8, "scheduler": "asha"}),
}
ROWS = 6000


def inner(root: Path) -> None:
    import ray

    from loopml.config import Workspace
    from loopml.registry.client import Registry
    from loopml.spec import parse_spec
    from loopml.train.trainer import split_frame
    from loopml.train.tune import best_of, run_trial, run_tuning, tuning_split
    from tests.train.conftest import tabular_frame

    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    print(f"Ray start: {time.perf_counter() - t0:.1f} s ({os.cpu_count()} CPUs, one per trial)\n", flush=True)
    df = tabular_frame(ROWS)
    rows = []
    for name, (model, tuning) in CASES.items():
        spec = parse_spec({"name": "bench", "task": "classification", "model": model, "tuning": tuning,
                           "data": {"source": "unused.csv", "target": "label", "features": ["a", "b", "color"],
                                    "split": {"test_size": 0.25, "seed": 1}}})
        train = split_frame(spec, df).train
        ws = Workspace(root / name.split()[0]).init()
        reg = Registry(ws)
        with reg.run("bench", run_name=name) as parent:
            t0 = time.perf_counter()
            outcome = run_tuning(spec, train, ws, reg, parent)
            tune_s = time.perf_counter() - t0
        fit_df, val_df = tuning_split(spec, train)
        metric = outcome.metric
        t0 = time.perf_counter()
        plain = []
        for r in outcome.rows:  # the configurations Tune sampled, in order
            reports: list = []
            run_trial(r.config, spec, fit_df, val_df, reports.append)
            plain.append(reports[-1][metric])
        loop_s = time.perf_counter() - t0
        n = len(outcome.rows)
        stopped = sum(r.status == "STOPPED" for r in outcome.rows)
        best_tune = best_of(outcome.rows, outcome.mode).metric
        rows.append((name, n, tune_s, loop_s, best_tune, max(plain) if outcome.mode == "max" else min(plain),
                     stopped, metric))
        print(f"{name}: Ray Tune {tune_s:.1f} s (first trial report after {outcome.first_report_s:.1f} s), "
              f"loop {loop_s:.1f} s (the loop's work spread over {os.cpu_count()} CPUs: "
              f"{loop_s / os.cpu_count():.1f} s)", flush=True)
    print()
    print(f"{'search':38} {'trials':>6} {'Tune s':>8} {'loop s':>8} {'Tune/min':>9} {'loop/min':>9} "
          f"{'speed-up':>9} {'best Tune':>10} {'best loop':>10} {'ASHA stops':>10}")
    for name, n, tune_s, loop_s, bt, bl, stopped, metric in rows:
        print(f"{name:38} {n:6d} {tune_s:8.1f} {loop_s:8.1f} {60 * n / tune_s:9.1f} {60 * n / loop_s:9.1f} "
              f"{loop_s / tune_s:8.2f}x {bt:10.4f} {bl:10.4f} {stopped:10d}   ({metric})")
    ray.shutdown()


def main() -> None:
    if sys.argv[1:2] == ["--inner"]:
        inner(Path(sys.argv[2]))
        return
    with tempfile.TemporaryDirectory(prefix="loopml-tune-bench-") as root:
        cmd = " ".join([sys.executable, str(Path(__file__).resolve()), "--inner", root])
        env = {k: v for k, v in os.environ.items() if k not in ("LOOPML_HOME", "LOOPML_TRACKING_URI")}
        # Ray listens on every interface: inside unshare -n only a loopback exists
        p = subprocess.run(["unshare", "-n", "sh", "-c", f"ip link set lo up && RAY_AUTH_MODE=disabled exec {cmd}"],
                           cwd=REPO, env=env)
        sys.exit(p.returncode)


if __name__ == "__main__":
    main()
