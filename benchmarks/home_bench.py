"""LOOPML_HOME on object storage (#11): each pipeline step with the whole platform configuration
(snapshots on S3 under the home, MLflow on PostgreSQL with artifacts on S3, the state store on
PostgreSQL) beside the same step in the embedded default, and the prediction log's lag from an
answer to its visibility to a reader on another machine, S3 beside the local log.

Starts a real platform (``Platform.up``) in a temporary folder. The anchor of each row is the
embedded default (one local folder): same code, same data, same machine, same run.

    .venv/bin/python benchmarks/home_bench.py [--rows 20000] [--runs 3] [--lag-runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from platform_bench import _timed_pipeline, print_steps, timed_runs  # noqa: E402 - as bench-platform


def _lag(root, reader_root, publish: bool, runs: int) -> list[float]:
    """Seconds from handing rows to a server's recorder to a reader seeing all of them."""
    from loopml.monitor.predlog import read_predictions
    from loopml.serve.recorder import LogSettings, PredictionRecorder

    rec = PredictionRecorder(root, "m", settings=LogSettings(compact_interval_s=0)).start()
    out = []
    try:
        for k in range(runs):
            ids = [f"{k}-{i}-{uuid.uuid4().hex[:6]}" for i in range(100)]
            t0 = time.perf_counter()
            rec.writer.append([{"request_id": r, "ts": time.time(), "model": "m", "version": "1", "variant": "champion",
                                "inputs": {"x": 1.0}, "outputs": {"prediction": 0}} for r in ids])
            while not set(ids) <= set(read_predictions(reader_root, "m")["request_id"]):
                time.sleep(0.05)
            out.append(time.perf_counter() - t0)
    finally:
        rec.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--lag-runs", type=int, default=5)
    args = ap.parse_args()

    from loopml.config import LogRoot, Workspace
    from loopml.demo.project import scaffold_project
    from loopml.platform.stack import Platform
    from loopml.spec import load_spec

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plat = Platform(root / "platform")
        try:
            plat.up()
            env = plat.environment(secrets=True)
            os.environ.update({k: v for k, v in env.items() if k.startswith(("AWS_", "PG"))})
            home = f"s3://loopml/bench-{uuid.uuid4().hex[:8]}"
            project = scaffold_project(root / "proj", rows=args.rows)
            spec = load_spec(project)
            local = Workspace(root / "local").init()
            remote = Workspace(root / "remote", tracking_uri_override=env["LOOPML_TRACKING_URI"],
                               state_uri_override=env["LOOPML_STATE_URI"], remote_home=home).init()
            _timed_pipeline(spec, local, project)  # warm-up: imports, first MLflow schema, page cache
            times = timed_runs(spec, project, {"local": local, "platform": remote}, args.runs)
            lag_local = _lag(root / "lag-local", root / "lag-local", False, args.lag_runs)
            url = f"{home}/predictions"
            lag_s3 = _lag(LogRoot(root / "lag-a", remote_url=url), LogRoot(root / "lag-b", remote_url=url), True,
                          args.lag_runs)
        finally:
            plat.remove()

    print_steps(times, args.rows, args.runs)
    lo, s3 = statistics.median(lag_local), statistics.median(lag_s3)
    print(f"\nprediction log, answer -> visible to a reader, median of {args.lag_runs} (local log = anchor)")
    print(f"local log (same machine)       {lo:6.2f} s")
    print(f"S3 home (another machine)      {s3:6.2f} s   ({s3 / lo:.1f}x; max {max(lag_s3):.2f} s)")


if __name__ == "__main__":
    main()
