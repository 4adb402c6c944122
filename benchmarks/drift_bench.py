"""Drift benchmark: loopml's full automatic drift report vs Evidently's DataDriftPreset.

Same data on both sides (20 numeric + 5 categorical columns, generated from one seed,
current window drifted in 3 numeric and 1 categorical column), each side in its own
process so peak memory is its own:

* loopml: ``compute_drift(profile, current)``; the reference profile is built once when
  a snapshot is taken, so its build time is printed separately (and in the total).
* Evidently 0.7 ``Report([DataDriftPreset()]).run(current, reference)``, in its own
  virtualenv (not a loopml dependency)::

      python3 -m venv /tmp/evvenv && /tmp/evvenv/bin/pip install evidently==0.7.23 "pandas<2.3"
      .venv/bin/python benchmarks/drift_bench.py --rows 100000 1000000 --evidently-python /tmp/evvenv/bin/python

Prints one line per size and side, then a Markdown table: times, ratio, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

N_NUM, N_CAT, SEED = 20, 5, 7


def make_data(rows: int, seed: int, drifted: bool):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    cols = {}
    for i in range(N_NUM):
        shift = 0.5 if drifted and i < 3 else 0.0
        cols[f"num_{i}"] = rng.normal(i + shift, 1.0 + i / 10, rows)
    cats = np.array([f"cat_{k}" for k in range(20)])
    base = np.linspace(1, 3, 20)
    for j in range(N_CAT):
        p = base[::-1] if drifted and j == 0 else base
        cols[f"cat_{j}"] = cats[rng.choice(20, rows, p=p / p.sum())]
    return pd.DataFrame(cols)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_loopml(rows: int) -> dict:
    import scipy.special  # noqa: F401 - imported before timing, as Evidently's are
    import scipy.stats  # noqa: F401

    from loopml.data.profile import build_profile
    from loopml.monitor.drift import compute_drift
    from loopml.spec import MonitoringSpec

    ref = make_data(rows, SEED, False)
    t = time.perf_counter()
    profile = build_profile(ref)
    t_profile = time.perf_counter() - t
    del ref  # a drift check reads the profile, not the raw reference
    cur = make_data(rows, SEED + 1, True)
    t = time.perf_counter()
    report = compute_drift(profile, cur)
    t_drift = time.perf_counter() - t
    # the same check with Evidently's large-sample methods and thresholds, for equal sensitivity
    like = MonitoringSpec(features={**{f"num_{i}": {"method": "wasserstein", "threshold": 0.1} for i in range(N_NUM)},
                                    **{f"cat_{j}": {"method": "jensenshannon", "threshold": 0.1} for j in range(N_CAT)}})
    t = time.perf_counter()
    report_like = compute_drift(profile, cur, settings=like)
    t_like = time.perf_counter() - t
    return {"side": "loopml", "rows": rows, "profile_s": t_profile, "drift_s": t_drift, "drift_like_s": t_like,
            "peak_rss_mb": peak_rss_mb(), "drifted": report.drifted,
            "drifted_columns": sorted(f.name for f in report.drifted_features), "rule": report.rule,
            "drifted_columns_like": sorted(f.name for f in report_like.drifted_features)}


def worker_evidently(rows: int) -> dict:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    ref = make_data(rows, SEED, False)
    cur = make_data(rows, SEED + 1, True)
    dd = DataDefinition(numerical_columns=[f"num_{i}" for i in range(N_NUM)],
                        categorical_columns=[f"cat_{j}" for j in range(N_CAT)])
    t = time.perf_counter()
    snap = Report([DataDriftPreset()]).run(current_data=Dataset.from_pandas(cur, data_definition=dd),
                                           reference_data=Dataset.from_pandas(ref, data_definition=dd))
    result = snap.dict()
    t_drift = time.perf_counter() - t
    drifted = []
    for m in result["metrics"]:
        cfg = m.get("config", {})
        if cfg.get("type", "").endswith("ValueDrift") and m["value"] >= cfg.get("threshold", 0.1):
            drifted.append(cfg["column"])
    return {"side": "evidently", "rows": rows, "drift_s": t_drift, "peak_rss_mb": peak_rss_mb(),
            "drifted_columns": sorted(drifted)}


def run_worker(python: str, side: str, rows: int) -> dict:
    out = subprocess.run([python, __file__, "--worker", side, "--rows", str(rows)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{side} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--evidently-python", default="/tmp/evvenv/bin/python")
    ap.add_argument("--worker", choices=["loopml", "evidently"])
    args = ap.parse_args()
    if args.worker:
        fn = worker_loopml if args.worker == "loopml" else worker_evidently
        print(json.dumps(fn(args.rows[0])))
        return
    table = []
    for rows in args.rows:
        lm = run_worker(sys.executable, "loopml", rows)
        print(f"loopml    {rows:>9,} x {rows:,}: drift {lm['drift_s']:.2f} s (+ profile at snapshot "
              f"{lm['profile_s']:.2f} s), peak RSS {lm['peak_rss_mb']:.0f} MB; {lm['rule']}: {lm['drifted_columns']}", flush=True)
        print(f"loopml    {rows:>9,} x {rows:,}: with Evidently's methods (normed Wasserstein, JS >= 0.1) "
              f"{lm['drift_like_s']:.2f} s; drifted {lm['drifted_columns_like']}", flush=True)
        ev = run_worker(args.evidently_python, "evidently", rows)
        print(f"evidently {rows:>9,} x {rows:,}: drift {ev['drift_s']:.2f} s, peak RSS {ev['peak_rss_mb']:.0f} MB; "
              f"drifted {ev['drifted_columns']}", flush=True)
        table.append((rows, lm, ev))
        print(f"  ratio: {ev['drift_s'] / lm['drift_s']:.0f}x on the check, "
              f"{ev['drift_s'] / (lm['drift_s'] + lm['profile_s']):.1f}x including the profile build", flush=True)
    print("\n| rows (ref x cur) | loopml drift check | loopml profile (once, at snapshot) | Evidently DataDriftPreset "
          "| speed-up (check) | speed-up (incl. profile) | loopml, Evidently's methods | speed-up | loopml peak RSS | Evidently peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rows, lm, ev in table:
        print(f"| {rows:,} x {rows:,} | {lm['drift_s']:.2f} s | {lm['profile_s']:.2f} s | {ev['drift_s']:.1f} s "
              f"| {ev['drift_s'] / lm['drift_s']:.0f}x | {ev['drift_s'] / (lm['drift_s'] + lm['profile_s']):.1f}x "
              f"| {lm['drift_like_s']:.2f} s | {ev['drift_s'] / lm['drift_like_s']:.0f}x "
              f"| {lm['peak_rss_mb']:.0f} MB | {ev['peak_rss_mb']:.0f} MB |")


if __name__ == "__main__":
    main()
