"""The local platform's figures: start time per engine, and each pipeline step on the platform
beside the same step in the embedded default (MLflow on SQLite, artifacts in the workspace).

Starts a real platform (``Platform.up``: PostgreSQL, SeaweedFS, MLflow, Alertmanager,
Prometheus on 127.0.0.1) in a temporary folder, then runs the example project's pipeline
(``run_pipeline``, ``force=True`` so every run trains and registers) alternately in a local
workspace and in one tracked on the platform, and prints the median seconds per step and the
ratio platform / local. The anchor is the embedded default: same code, same data, same machine.

    .venv/bin/python benchmarks/platform_bench.py [--rows 20000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def _timed_pipeline(spec, ws, project: Path) -> dict[str, float]:
    """Seconds per pipeline step, from the step callbacks' timestamps."""
    from loopml.loop.pipeline import run_pipeline

    marks: list[tuple[float, str]] = []

    def on_step(step: str, message: str) -> None:
        if not marks or marks[-1][1] != step:
            marks.append((time.perf_counter(), step))

    t0 = time.perf_counter()
    run_pipeline(spec, ws, project_dir=project, on_step=on_step, force=True)
    end = time.perf_counter()
    out: dict[str, float] = {}
    for (t, step), nxt in zip(marks, [m[0] for m in marks[1:]] + [end]):
        out[step] = out.get(step, 0.0) + (nxt - t)
    out["total"] = end - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    from loopml.config import Workspace
    from loopml.demo.project import scaffold_project
    from loopml.platform.stack import Platform
    from loopml.spec import load_spec

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plat = Platform(root / "platform")
        t0 = time.perf_counter()
        try:
            rows = plat.up()
            start_total = time.perf_counter() - t0
            state = plat.read_state()
            t1 = time.perf_counter()
            plat.up()
            second_up = time.perf_counter() - t1
            # printed at the end: MLflow's run messages would bury these lines
            report = [f"platform start: {start_total:.1f} s total; second `up` (all running): {second_up:.2f} s"]
            report += [f"  {r.name:<13} {state[r.name]['start_s']:6.1f} s" for r in rows]

            project = scaffold_project(root / "proj", rows=args.rows)
            spec = load_spec(project)
            local = Workspace(root / "local").init()
            remote = Workspace(root / "remote", tracking_uri_override=state["mlflow"]["url"]).init()
            _timed_pipeline(spec, local, project)  # warm-up: imports, first MLflow schema, page cache
            times = timed_runs(spec, project, {"local": local, "platform": remote}, args.runs)
        finally:
            plat.remove()

    print("\n" + "\n".join(report))
    print_steps(times, args.rows, args.runs)


def timed_runs(spec, project: Path, workspaces: dict, runs: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per step of ``runs`` pipeline runs, alternating between the named workspaces."""
    times: dict[str, dict[str, list[float]]] = {name: {} for name in workspaces}
    for _ in range(runs):
        for name, ws in workspaces.items():
            for step, s in _timed_pipeline(spec, ws, project).items():
                times[name].setdefault(step, []).append(s)
    return times


def print_steps(times: dict, rows: int, runs: int) -> None:
    print(f"\npipeline, {rows} rows, median of {runs} runs (embedded default = anchor)")
    print(f"{'step':<10} {'local s':>9} {'platform s':>11} {'platform/local':>15}")
    for step in times["local"]:
        lo = statistics.median(times["local"][step])
        pl = statistics.median(times["platform"].get(step, [float("nan")]))
        print(f"{step:<10} {lo:9.2f} {pl:11.2f} {pl / lo if lo else float('nan'):15.2f}")


if __name__ == "__main__":
    main()
