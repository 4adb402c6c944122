"""Serving speed per model kind: loopml vs Seldon MLServer 1.7 vs ``mlflow models serve``, one run.

    make bench-anchors   # once: MLServer 1.7 + its sklearn runtime in benchmarks/.anchors/mlserver
    python benchmarks/serve_models_bench.py [--duration 10] [--markdown FILE]

Three models on the same 20 float features (5,000 training rows): RandomForest (100 trees,
depth 10), HistGradientBoosting (defaults) and the reference linear pipeline
(``StandardScaler`` + ``LogisticRegression``). Each is logged with ``mlflow.sklearn`` (skops)
and registered in a temporary workspace, and ``optimize_version`` (what ``loopml optimize``
runs) adopts ONNX where its answers match the native model's; ``loopml serve`` then serves the
three with its defaults and names the runtime each got. MLServer gets the same fitted objects
as joblib files with a ``model-settings.json`` (``mlserver_sklearn.SKLearnModel``,
``parallel_workers: 0``) in its own virtualenv (its pins clash with ours); ``mlflow models serve
--env-manager local`` serves each registered version in turn.

Load: ``wrk -t1 -c16 -d<duration>s`` per cell after a 2 s warm-up, one row per request: OIP v2
JSON for loopml (the tensors its metadata lists: one per column) and MLServer (one ``[1, 20]``
FP64 tensor, what its sklearn runtime takes), ``dataframe_split`` on ``/invocations`` for
mlflow. Every answer is checked to be a 200 with a prediction before the load starts. Prints
req/s and p99 per server and the ratios from the same run. Servers bind 127.0.0.1 on free
ports; every process started here is stopped by its process group.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_bench import register  # noqa: E402
from serve_bench import free_port, stop, wrk  # noqa: E402

warnings.filterwarnings("ignore")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
ROOT = Path(__file__).resolve().parent.parent
MLSERVER = ROOT / "benchmarks" / ".anchors" / "mlserver" / "bin" / "mlserver"
FEATURES = [f"f{i}" for i in range(20)]
MODELS = {"rf": "RandomForest, 100 trees, depth 10", "hgb": "HistGradientBoosting (defaults)",
          "linear": "StandardScaler + LogisticRegression"}


def train(names: list[str]):
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(5000, 20)), columns=FEATURES)
    y = (X["f0"] + X["f1"] * X["f2"] - X["f3"] + rng.normal(size=5000) * 0.5 > 0).astype(int)
    make = {"rf": lambda: RandomForestClassifier(100, max_depth=10, random_state=0, n_jobs=1),
            "hgb": lambda: HistGradientBoostingClassifier(random_state=0),
            "linear": lambda: make_pipeline(StandardScaler(), LogisticRegression())}
    return X, {n: make[n]().fit(X, y) for n in names}


def spawn(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    # stderr to a file: a pipe nobody reads fills up and blocks a chatty server mid-run
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    p.log_path = log
    return p


def wait_ok(url: str, body: dict, proc: subprocess.Popen, timeout: float = 240.0) -> dict:
    """Poll until ``url`` answers ``body`` with a 200 (its JSON is returned); fail with the log."""
    import httpx

    end = time.monotonic() + timeout
    last = ""
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{Path(proc.log_path).read_text()[-3000:]}")
        try:
            r = httpx.post(url, json=body, timeout=10)
            if r.status_code == 200:
                return r.json()
            last = f"{r.status_code} {r.text[:300]}"
        except httpx.HTTPError as e:
            last = repr(e)
        time.sleep(0.5)
    raise RuntimeError(f"{url} gave no 200 in {timeout:.0f}s (last: {last}):\n{Path(proc.log_path).read_text()[-3000:]}")


def lua(path: Path, body: dict) -> Path:
    path.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                    f"wrk.body = {json.dumps(json.dumps(body))}\n")
    return path


def measure(url: str, script: Path, duration: int) -> dict:
    wrk_1(url, script, 2)  # warm-up: first requests, lazy imports, allocator
    return wrk_1(url, script, duration)


def wrk_1(url: str, script: Path, duration: int) -> dict:
    out = subprocess.run(["wrk", "-t1", "-c16", f"-d{duration}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, timeout=duration + 60).stdout
    import re

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"\s50(?:\.000)?%\s+(\S+)", out)
    p99 = re.search(r"\s99(?:\.000)?%\s+(\S+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    timeouts = re.search(r"Socket errors:.*timeout (\d+)", out)
    done = re.search(r"(\d+) requests in", out)
    if done is not None and int(done.group(1)) == 0:  # no answer at all: wrk prints no percentiles
        return {"rps": 0.0, "p50": float("nan"), "p99": float("nan"), "non2xx": 0,
                "timeouts": int(timeouts.group(1)) if timeouts else 0}
    if not (rps and p50 and p99):
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    from serve_bench import _ms

    return {"rps": float(rps.group(1)), "p50": _ms(p50.group(1)), "p99": _ms(p99.group(1)),
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "timeouts": int(timeouts.group(1)) if timeouts else 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk cell")
    ap.add_argument("--models", default="rf,hgb,linear")
    ap.add_argument("--servers", default="loopml,mlserver,mlflow")
    ap.add_argument("--markdown", type=Path, help="also write the table here")
    args = ap.parse_args()
    names = args.models.split(",")
    servers = args.servers.split(",")
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")
    if "mlserver" in servers and not MLSERVER.exists():
        sys.exit(f"MLServer not found at {MLSERVER}: run `make bench-anchors` first")
    import joblib

    from loopml.config import Workspace
    from loopml.registry.client import Registry
    from loopml.registry.optimize import optimize_version

    tmp = Path(tempfile.mkdtemp(prefix="loopml-models-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPML_", "MLSERVER_", "MLFLOW_"))}
    ws = Workspace(tmp / "ws").init()
    env.update(LOOPML_HOME=str(ws.home), MLFLOW_TRACKING_URI=ws.tracking_uri,
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    reg = Registry(ws)
    print("training, registering, optimizing ...", file=sys.stderr, flush=True)
    X, models = train(names)
    row = [round(float(v), 4) for v in X.iloc[7]]
    onnx = {}
    repo = tmp / "mlserver-models"
    for name, model in models.items():
        version = register(ws, name, model, X.head(3))
        onnx[name] = optimize_version(reg, reg.resolve(name, version))
        reg.promote(name, version, why="benchmark")
        folder = repo / name
        folder.mkdir(parents=True)
        joblib.dump(model, folder / "model.joblib")
        (folder / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": "1"}}))

    oip_mlserver = {"inputs": [{"name": "input-0", "shape": [1, 20], "datatype": "FP64", "data": row}]}
    split = {"dataframe_split": {"columns": FEATURES, "data": [row]}}
    results: dict[tuple[str, str], dict] = {}
    runtimes: dict[str, str] = {}
    procs: list[subprocess.Popen] = []
    try:
        if "loopml" in servers:
            port = free_port()
            cmd = [sys.executable, "-c", "from loopml.cli.main import main; main()", "serve", "--host", "127.0.0.1",
                   "--port", str(port)] + [a for n in names for a in ("-m", f"{n}@champion")]
            p = spawn(cmd, env, tmp / "loopml.log")
            procs.append(p)
            import httpx

            for name in names:
                url = f"http://127.0.0.1:{port}/v2/models/{name}/infer"
                wait_ok(f"http://127.0.0.1:{port}/invocations?model={name}", split, p)
                meta = httpx.get(f"http://127.0.0.1:{port}/v2/models/{name}").json()
                body = {"inputs": [{"name": t["name"], "shape": [1], "datatype": "FP64",
                                    "data": [row[FEATURES.index(t["name"])]]} for t in meta["inputs"]]}
                answer = wait_ok(url, body, p)
                assert answer["outputs"], answer
                results[("loopml", name)] = measure(url, lua(tmp / f"loopml-{name}.lua", body), args.duration)
            runtimes = {line.split()[2]: line for line in Path(p.log_path).read_text().splitlines()
                        if line.startswith("loopml serve:") and ": runtime " in line}
            stop(p)
        if "mlserver" in servers:
            port, gport, mport = free_port(), free_port(), free_port()
            (repo / "settings.json").write_text(json.dumps({"parallel_workers": 0, "host": "127.0.0.1",
                                                            "http_port": port, "grpc_port": gport,
                                                            "metrics_port": mport, "debug": False}))
            menv = {**env, "MLSERVER_HTTP_PORT": str(port), "MLSERVER_GRPC_PORT": str(gport),
                    "MLSERVER_METRICS_PORT": str(mport), "MLSERVER_HOST": "127.0.0.1",
                    "MLSERVER_PARALLEL_WORKERS": "0"}
            p = spawn([str(MLSERVER), "start", str(repo)], menv, tmp / "mlserver.log")
            procs.append(p)
            for name in names:
                url = f"http://127.0.0.1:{port}/v2/models/{name}/infer"
                answer = wait_ok(url, oip_mlserver, p)
                assert answer["outputs"], answer
                results[("mlserver", name)] = measure(url, lua(tmp / f"mlserver-{name}.lua", oip_mlserver),
                                                      args.duration)
            stop(p)
        if "mlflow" in servers:
            mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
            for name in names:  # one model per process: start, measure, stop
                port = free_port()
                p = spawn([mlflow, "models", "serve", "-m", f"models:/{name}@champion", "--env-manager", "local",
                           "--host", "127.0.0.1", "-p", str(port)], env, tmp / f"mlflow-{name}.log")
                procs.append(p)
                url = f"http://127.0.0.1:{port}/invocations"
                wait_ok(url, split, p)
                results[("mlflow", name)] = measure(url, lua(tmp / f"mlflow-{name}.lua", split), args.duration)
                stop(p)
    finally:
        for p in procs:
            stop(p)
    table = render(results, names, servers, onnx, runtimes, args.duration)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    shutil.rmtree(tmp, ignore_errors=True)


def render(results, names, servers, onnx, runtimes, duration) -> str:
    def cell(server, name, key="rps"):
        r = results.get((server, name))
        if r is None:
            return "-"
        bad = f" ({r['non2xx']} non-2xx)" if r["non2xx"] else ""
        bad += f" ({r['timeouts']} timed out)" if r.get("timeouts") else ""
        if key == "rps" and r["rps"] == 0:
            return f"0: no answer in {duration} s{bad}"
        return f"{r[key]:,.0f}{bad}" if key == "rps" else "-" if r[key] != r[key] else f"{r[key]:.1f}"

    def ratio(a, b, name):
        ra, rb = results.get((a, name)), results.get((b, name))
        return f"{ra['rps'] / rb['rps']:.1f}x" if ra and rb and rb["rps"] else "-"

    lines = ["| model | loopml req/s | MLServer req/s | mlflow req/s | loopml / MLServer | loopml / mlflow "
             "| p99 ms loopml / MLServer / mlflow | loopml runtime |",
             "|---|---|---|---|---|---|---|---|"]
    for name in names:
        res = onnx.get(name)
        runtime = "onnx" if res is not None and res.adopted else f"native ({res.reason})" if res else "?"
        lines.append(f"| {MODELS[name]} | {cell('loopml', name)} | {cell('mlserver', name)} | {cell('mlflow', name)} | "
                     f"{ratio('loopml', 'mlserver', name)} | {ratio('loopml', 'mlflow', name)} | "
                     f"{cell('loopml', name, 'p99')} / {cell('mlserver', name, 'p99')} / {cell('mlflow', name, 'p99')} | "
                     f"{runtime} |")
    notes = "\n".join(f"    {line.strip()}" for line in runtimes.values())
    return ("\n".join(lines) + f"\n\nwrk -t1 -c16, {duration} s per cell (after 2 s warm-up), one row per request; "
            "OIP v2 JSON for loopml and MLServer, dataframe_split for mlflow. "
            f"Machine: {os.cpu_count()} cores shared with wrk.\n" + (f"\nloopml serve said:\n\n{notes}\n" if notes else ""))


if __name__ == "__main__":
    main()
