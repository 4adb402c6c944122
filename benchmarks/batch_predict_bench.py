"""Batch prediction benchmark: `loopml predict` vs `mlflow models predict`, same model, same file.

    python benchmarks/batch_predict_bench.py [--rows 200000] [--chunk-rows 50000]

Trains the example fraud model (`loopml new`'s project) into a temporary workspace, writes
one CSV of ``--rows`` rows resampled from its data, then runs both commands on it as a user
would (fresh processes, wall time including start-up and model load) and prints rows/s,
peak resident memory (GNU time's maxrss) and the ratios. `mlflow models predict` runs with
`--env-manager local` (the same virtualenv, no environment building) and the CSV content
type. Both outputs are checked to agree on every row before any figure is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in MB) of one command, via GNU time."""
    t0 = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "MAXRSS=%M", *cmd], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    rss = next((int(line.split("=", 1)[1]) for line in out.stderr.splitlines() if line.startswith("MAXRSS=")), 0)
    return wall, rss // 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--chunk-rows", type=int, default=50_000)
    args = ap.parse_args()

    from loopml.config import Workspace
    from loopml.demo.project import scaffold_project
    from loopml.loop.pipeline import run_pipeline
    from loopml.registry.client import Registry
    from loopml.spec import load_spec

    tmp = Path(tempfile.mkdtemp(prefix="loopml-batch-bench-"))
    proj = scaffold_project(tmp / "proj", rows=5000)
    ws = Workspace(tmp / "ws").init()
    spec = load_spec(proj)
    print("training the example model ...", flush=True)
    result = run_pipeline(spec, ws, project_dir=proj)
    ref = Registry(ws).resolve(spec.name, result.version)
    base = pd.read_csv(proj / "data" / "transactions.csv")
    features = spec.feature_columns(list(base.columns))
    rng = np.random.default_rng(0)
    data = base.iloc[rng.integers(0, len(base), args.rows)][features].reset_index(drop=True)
    # The model's signature says double for every numeric column (loopml trains on floats);
    # mlflow's schema enforcement refuses int64 -> double, so the file carries floats.
    for c in data.columns:
        if pd.api.types.is_integer_dtype(data[c]):
            data[c] = data[c].astype(np.float64)
    src = tmp / "input.csv"
    data.to_csv(src, index=False)
    print(f"input: {args.rows:,} rows x {len(features)} columns, {src.stat().st_size / 1e6:.1f} MB CSV", flush=True)

    env = {**os.environ, "LOOPML_HOME": str(ws.home), "MLFLOW_TRACKING_URI": ws.tracking_uri}
    env.pop("LOOPML_TRACKING_URI", None)
    ours_out, theirs_out = tmp / "ours.parquet", tmp / "theirs.json"
    ours = timed([sys.executable, "-m", "loopml.cli.main", "predict", "-m", f"{spec.name}/{ref.version}",
                  str(src), str(ours_out), "--chunk-rows", str(args.chunk_rows)], env)
    theirs = timed([sys.executable, "-m", "mlflow", "models", "predict", "-m", f"models:/{spec.name}/{ref.version}",
                    "-i", str(src), "-o", str(theirs_out), "-t", "csv", "--env-manager", "local"], env)

    got = pd.read_parquet(ours_out)["prediction"].to_numpy()
    payload = json.loads(theirs_out.read_text())
    want = np.asarray(payload["predictions"] if isinstance(payload, dict) else payload)
    agree = np.array_equal(got, want.astype(got.dtype))
    print(f"answers agree on all {args.rows:,} rows: {agree}")
    if not agree:
        sys.exit("the two commands disagree; no figures")
    rows = args.rows
    print()
    print("| command | wall s | rows/s | peak RSS MB |")
    print("|---|---|---|---|")
    print(f"| `loopml predict` (chunk {args.chunk_rows:,}) | {ours[0]:.1f} | {rows / ours[0]:,.0f} | {ours[1]:,} |")
    print(f"| `mlflow models predict` | {theirs[0]:.1f} | {rows / theirs[0]:,.0f} | {theirs[1]:,} |")
    print(f"\nratio: {theirs[0] / ours[0]:.2f}x the rows/s of mlflow models predict, "
          f"{ours[1] / max(theirs[1], 1):.2f}x its peak memory")


if __name__ == "__main__":
    main()
