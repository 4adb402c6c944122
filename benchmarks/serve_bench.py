"""Serving benchmark: loopml serve vs mlflow models serve vs a bare ASGI echo, driven by wrk.

    python benchmarks/serve_bench.py [--duration 10] [--markdown docs/benchmarks-serve-table.md]

Trains the reference model (20-feature logistic regression), registers it in a temporary
workspace, then for each server drives wrk (2 threads, 16 and 64 connections) with
single-row and 32-row ``dataframe_split`` bodies on ``POST /invocations`` and prints
requests/s, p50 and p99, and the ratios. All servers bind 127.0.0.1; every process the
script starts is stopped by its pid at the end. Needs ``wrk`` (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FEATURES = [f"f{i}" for i in range(20)]
NAME = "bench_lr"


# -- the bare echo app (same stack: uvicorn + uvloop + httptools + orjson) -------------------

async def echo_app(scope, receive, send):  # pragma: no cover - runs in its own process
    import orjson

    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    body = b""
    more = True
    while more:
        msg = await receive()
        body += msg.get("body", b"")
        more = msg.get("more_body", False)
    data = orjson.loads(body) if body else {}
    n = len(data.get("dataframe_split", {}).get("data", [])) if isinstance(data, dict) else 0
    out = orjson.dumps({"predictions": [0] * n})
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})


def run_echo(port: int) -> None:  # pragma: no cover
    import uvicorn

    uvicorn.run(echo_app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning",
                access_log=False, server_header=False, date_header=False)


# -- set-up ------------------------------------------------------------------------------------

def train_and_register(home: Path) -> str:
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from loopml.config import Workspace
    from loopml.registry.client import Registry

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(5000, 20)), columns=FEATURES)
    y = (X.values @ rng.normal(size=20) + rng.normal(size=5000) > 0).astype(int)
    model = Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression())]).fit(X, y)
    ws = Workspace.from_env(home).init()
    reg = Registry(ws)
    with reg.run("serve-bench") as run:
        uri = run.log_model(model, X.head(5))
        ref = reg.register(uri, NAME, run.run_id, {})
    reg.promote(NAME, ref.version, why="benchmark")
    return ws.tracking_uri


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 180.0, proc: subprocess.Popen | None = None) -> None:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {server_log(proc)}")
        try:
            if httpx.post(url, json={"dataframe_split": {"columns": FEATURES, "data": [[0.0] * 20]}},
                          timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not come up in {timeout}s")


def start_servers(home: Path, tracking_uri: str, which: list[str]) -> dict[str, tuple[subprocess.Popen, str]]:
    env = {**os.environ, "LOOPML_HOME": str(home), "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("LOOPML_ADMIN_TOKEN", None)
    env.pop("LOOPML_SERVE_COMPILED", None)
    procs = {}
    for kind in which:
        port = free_port()
        kind_env = env
        if kind in ("loopml", "loopml-nolog", "loopml-sklearn"):
            cmd = [sys.executable, "-c", "from loopml.cli.main import main; main()", "serve", "-m", f"{NAME}@champion",
                   "--host", "127.0.0.1", "--port", str(port)] + (["--no-log"] if kind == "loopml-nolog" else [])
            if kind == "loopml-sklearn":  # the same server without the compiled linear fast path
                kind_env = {**env, "LOOPML_SERVE_COMPILED": "0"}
        elif kind == "mlflow":
            cmd = [shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow", "models", "serve",
                   "-m", f"models:/{NAME}@champion", "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port)]
        else:
            cmd = [sys.executable, __file__, "--echo-server", str(port)]
        # stderr goes to a file: a pipe nobody reads fills up (mlflow logs per request) and
        # then blocks the server mid-benchmark
        log = open(home.parent / f"{kind}.log", "w")  # noqa: SIM115 - closed with the temp folder
        p = subprocess.Popen(cmd, env=kind_env, stdout=subprocess.DEVNULL, stderr=log, text=True,
                             start_new_session=True)
        p.log_path = log.name
        url = f"http://127.0.0.1:{port}/invocations"
        wait_http(url, proc=p)
        procs[kind] = (p, url)
    return procs


def server_log(p: subprocess.Popen) -> str:
    try:
        return Path(p.log_path).read_text()[-2000:]
    except (AttributeError, OSError):
        return ""


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)  # the group this script created for that server
        except ProcessLookupError:
            return
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


# -- wrk -----------------------------------------------------------------------------------------

def lua_script(rows: int, folder: Path) -> Path:
    import numpy as np

    data = np.round(np.random.default_rng(rows).normal(size=(rows, 20)), 4).tolist()
    body = json.dumps({"dataframe_split": {"columns": FEATURES, "data": data}})
    path = folder / f"post_{rows}.lua"
    path.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                    f"wrk.body = {json.dumps(body)}\n")
    return path


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    if m is None:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return {"us": value / 1000, "ms": value, "s": value * 1000, "m": value * 60_000}[unit]


def wrk(url: str, script: Path, connections: int, duration: int) -> dict:
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, timeout=duration + 60).stdout
    rps_m, p50_m, p99_m = (re.search(p, out) for p in (r"Requests/sec:\s+([\d.]+)", r"\s50(?:\.000)?%\s+(\S+)", r"\s99(?:\.000)?%\s+(\S+)"))
    if not (rps_m and p50_m and p99_m):
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    rps, p50, p99 = float(rps_m.group(1)), _ms(p50_m.group(1)), _ms(p99_m.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1) if errors else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--servers", default="loopml,loopml-nolog,loopml-sklearn,mlflow,echo",
                    help="loopml (prediction log on), loopml-nolog, loopml-sklearn (log on, compiled "
                         "linear fast path off), mlflow, echo")
    ap.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    ap.add_argument("--echo-server", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.echo_server:
        return run_echo(args.echo_server)
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")
    which = args.servers.split(",")
    with tempfile.TemporaryDirectory(prefix="loopml-bench-") as tmp:
        tmp = Path(tmp)
        print("training and registering the reference model ...", file=sys.stderr)
        tracking = train_and_register(tmp / "ws")
        procs = start_servers(tmp / "ws", tracking, which)
        results = {}
        try:
            for rows in (1, 32):
                script = lua_script(rows, tmp)
                for conns in (16, 64):
                    for kind in which:
                        _, url = procs[kind]
                        wrk(url, script, conns, 2)  # warm-up
                        results[(kind, rows, conns)] = r = wrk(url, script, conns, args.duration)
                        print(f"{kind:7s} rows={rows:2d} c={conns:2d}  {r['rps']:9.0f} req/s  "
                              f"p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:7.2f} ms  non2xx {r['non2xx']}"
                              f"{'  socket errors: ' + r['socket_errors'] if r['socket_errors'] else ''}",
                              file=sys.stderr)
                        p, _ = procs[kind]
                        if p.poll() is not None:
                            print(f"{kind} exited with {p.returncode}: {server_log(p)}", file=sys.stderr)
        finally:
            for p, _ in procs.values():
                stop(p)
    table = render(results, which, args.duration)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)


def render(results: dict, which: list[str], duration: int) -> str:
    lines = ["| payload | conns | server | req/s | p50 ms | p99 ms | vs mlflow | vs echo |",
             "|---|---|---|---|---|---|---|---|"]
    for rows in (1, 32):
        for conns in (16, 64):
            base = results.get(("mlflow", rows, conns))
            echo = results.get(("echo", rows, conns))
            for kind in which:
                r = results[(kind, rows, conns)]
                vs_m = f"{r['rps'] / base['rps']:.1f}x" if base and base["rps"] > 0 else "-"
                vs_e = f"{100 * r['rps'] / echo['rps']:.0f}%" if echo and echo["rps"] > 0 else "-"
                bad = f" ({r['non2xx']} non-2xx)" if r["non2xx"] else ""
                lines.append(f"| {rows} row{'s' if rows > 1 else ''} | {conns} | {kind}{bad} | {r['rps']:.0f} | "
                             f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {vs_m} | {vs_e} |")
    return "\n".join(lines) + f"\n\nwrk -t2, {duration} s per cell, POST /invocations (dataframe_split).\n"


if __name__ == "__main__":
    main()
