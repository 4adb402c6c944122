"""gRPC vs REST throughput of one ``loopml serve`` process, same model, same row, one run.

    python benchmarks/grpc_bench.py [--duration 8] [--concurrency 16] [--rows 1]
                                    [--client h2load|python] [--grpc-connections 1]

Scaffolds the ``loopml new`` project in a temporary folder, trains and registers its model,
starts ``loopml serve --grpc-port`` (one process answering both protocols) and loads it with
the same client for both protocols, ``--concurrency`` requests in flight, closed loop:

- ``--client h2load`` (default; Debian ``nghttp2-client``): nghttp2's C load generator, so
  the client's own cost is small and alike for both. REST: OIP v2 JSON (one tensor per named
  column) on ``--concurrency`` HTTP/1.1 keep-alive connections (``--h1``); gRPC: the same
  tensors as a ``ModelInferRequest`` with ``raw_input_contents`` (serialized by tritonclient's
  protobuf classes, what ``tritonclient.grpc`` sends), framed as gRPC, as ``--concurrency``
  concurrent streams on ``--grpc-connections`` HTTP/2 connections (default 1). h2load sees a
  gRPC error as an HTTP 200, so the answers are counted by the server too: the errors column
  is the number of non-200 statuses that ``/metrics`` recorded during the round (gRPC statuses are recorded as their HTTP
  equivalent), and every request kind is checked to answer OK before the rounds.
  h2load reports the mean latency, not percentiles.
- ``--client python``: a Python asyncio client (uvloop) in this process, raw sockets for
  REST and grpc.aio for gRPC (costlier per call than the raw sockets: it favours REST).

The rounds alternate REST, gRPC, gRPC, REST, ``--duration`` seconds each with the
first second not counted; figures are the means of the two rounds of each, so a drift of the
machine during the run counts against neither. Prints requests/s, latency and the server's CPU
time per answered request (user + system, from /proc; the figure least moved by other work on
a shared machine) per server kind and protocol, and the ratio gRPC / REST. Every process started here is stopped by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overload_bench import (NAME, ROOT, free_port, load, pct, prepare, request_bytes, start_server,  # noqa: E402
                            stop, wait_ready)


def oip_tensors(record: dict, inputs: list[dict], rows: int) -> list[tuple[str, str, list]]:
    """(name, datatype, values) per model input (from its OIP metadata): the CSV record's
    value, typed, repeated ``rows`` times."""
    out = []
    for t in inputs:
        name, datatype, v = t["name"], t["datatype"], record[t["name"]]
        if datatype == "BOOL":
            v = str(v).strip().lower() in ("true", "1", "1.0")
        elif datatype == "BYTES":
            v = str(v)
        elif datatype.startswith(("INT", "UINT")):
            datatype, v = "INT64", int(float(v))
        else:
            datatype, v = "FP64", float(v)
        out.append((name, datatype, [v] * rows))
    return out


def rest_request(port: int, tensors, rows: int) -> bytes:
    body = json.dumps({"inputs": [{"name": n, "shape": [rows], "datatype": d, "data": vals}
                                  for n, d, vals in tensors]}).encode()
    return (f"POST /v2/models/{NAME}/infer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def grpc_request(tensors, rows: int) -> bytes:
    import numpy as np
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name=NAME)
    for n, d, vals in tensors:
        req.inputs.add(name=n, datatype=d, shape=[rows])
        if d == "BYTES":
            raw = b"".join(struct.pack("<I", len(b)) + b for b in (str(x).encode() for x in vals))
        else:
            raw = np.asarray(vals, dtype={"FP64": np.float64, "INT64": np.int64, "BOOL": np.bool_}[d]).tobytes()
        req.raw_input_contents.append(raw)
    return req.SerializeToString()


def grpc_load(port: int, req: bytes, concurrency: int, seconds: float, channels: int,
              warmup: float = 1.0) -> dict[str, list[float]]:
    """Like overload_bench.load, for gRPC: latencies (ms) by status code name."""
    import grpc

    by_status: dict[str, list[float]] = {}
    details: dict[str, str] = {}

    async def main():
        chans = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(channels)]
        calls = [c.unary_unary("/inference.GRPCInferenceService/ModelInfer") for c in chans]  # bytes in, bytes out

        async def worker(i: int, start: float, end: float):
            call = calls[i % channels]
            while time.monotonic() < end:
                started, t0 = time.monotonic(), time.perf_counter()
                try:
                    await call(req, timeout=60)
                    status = "OK"
                except grpc.aio.AioRpcError as e:
                    status = e.code().name
                    details.setdefault(status, e.details())
                if started >= start:
                    by_status.setdefault(status, []).append((time.perf_counter() - t0) * 1000)

        now = time.monotonic()
        await asyncio.gather(*(worker(i, now + warmup, now + seconds) for i in range(concurrency)))
        for c in chans:
            await c.close()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    for status, text in details.items():
        print(f"gRPC {status}: {text}", file=sys.stderr)
    return by_status


def summary(ok: list[float], errors: int, seconds: float) -> dict:
    return {"rps": len(ok) / seconds, "p50": pct(ok, 0.5), "p99": pct(ok, 0.99), "mean": sum(ok) / max(len(ok), 1),
            "errors": errors}


def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message (not compressed): what goes in the HTTP/2 DATA frames."""
    return b"\0" + struct.pack(">I", len(message)) + message


def h2load(url: str, body: Path, headers: list[str], concurrency: int, seconds: float, h1: bool,
           connections: int = 1) -> dict:
    """h2load closed loop for ``seconds`` (the first second is warm-up): requests/s, mean ms."""
    cmd = ["h2load", f"--warm-up-time=1s", f"--duration={seconds - 1.0:g}s", "-d", str(body), "-t", "1"]
    if h1:
        cmd += ["--h1", "-c", str(concurrency), "-m", "1"]
    else:
        cmd += ["-c", str(connections), "-m", str(max(1, concurrency // connections))]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 60).stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
    if done is None or mean is None:
        raise RuntimeError(f"cannot read h2load's output:\n{out}")
    from serve_bench import _ms

    ok = int(done.group(2))
    return {"rps": ok / (seconds - 1.0), "mean": _ms(mean.group(1)), "p50": float("nan"), "p99": float("nan"),
            "errors": int(done.group(3)) + int(done.group(4))}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_counts(port: int) -> dict[str, float]:
    """``loopml_requests_total`` by status, summed over labels, from the server's /metrics."""
    import httpx

    counts: dict[str, float] = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text.splitlines():
        if line.startswith("loopml_requests_total{"):
            status = re.search(r'status="(\d+)"', line).group(1)
            counts[status] = counts.get(status, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def check_grpc(gport: int, greq: bytes) -> None:
    """One ModelInfer with the benchmark's request must answer OK with outputs."""
    import grpc
    from tritonclient.grpc import service_pb2

    with grpc.insecure_channel(f"127.0.0.1:{gport}") as ch:
        raw = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")(greq, timeout=60)
    resp = service_pb2.ModelInferResponse.FromString(raw)
    if not resp.outputs:
        sys.exit(f"gRPC answer without outputs: {resp}")


def measure_server(proj: Path, env: dict, record: dict, args, tmp: Path) -> dict[str, list[dict]]:
    port, gport = free_port(), free_port()
    log = tmp / "server.log"
    server = start_server(ROOT, proj, env, port, ["--grpc-port", str(gport)], log)
    results: dict[str, list[dict]] = {"REST": [], "gRPC": []}
    try:
        wait_ready(port, request_bytes(port, json.dumps({"dataframe_records": [record]}).encode()), server, log)
        import httpx

        inputs = httpx.get(f"http://127.0.0.1:{port}/v2/models/{NAME}").json()["inputs"]
        tensors = oip_tensors(record, inputs, args.rows)
        rest_req = rest_request(port, tensors, args.rows)
        greq = grpc_request(tensors, args.rows)
        check_grpc(gport, greq)
        rest_body, grpc_body = tmp / "rest.json", tmp / "grpc.bin"
        rest_body.write_bytes(rest_req.split(b"\r\n\r\n", 1)[1])
        grpc_body.write_bytes(grpc_frame(greq))
        measured = args.duration - 1.0
        if args.client == "python":
            grpc_load(gport, greq, 2, 2.0, 1, warmup=0)  # first calls: channel set-up, lazy imports
        for proto in ("REST", "gRPC", "gRPC", "REST"):
            before, cpu0 = status_counts(port), cpu_seconds(server.pid)
            if args.client == "h2load":
                if proto == "REST":
                    r = h2load(f"http://127.0.0.1:{port}/v2/models/{NAME}/infer", rest_body,
                               ["content-type: application/json"], args.concurrency, args.duration, h1=True)
                else:
                    r = h2load(f"http://127.0.0.1:{gport}/inference.GRPCInferenceService/ModelInfer", grpc_body,
                               ["content-type: application/grpc", "te: trailers"], args.concurrency, args.duration,
                               h1=False, connections=args.grpc_connections)
            elif proto == "REST":
                by = load(port, rest_req, args.concurrency, args.duration)
                ok = by.pop(200, [])
                r = summary(ok, sum(len(v) for v in by.values()), measured)
            else:
                by = grpc_load(gport, greq, args.concurrency, args.duration, args.grpc_connections)
                ok = by.pop("OK", [])
                r = summary(ok, sum(len(v) for v in by.values()), measured)
            cpu1, after = cpu_seconds(server.pid), status_counts(port)
            r["cpu_us"] = (cpu1 - cpu0) * 1e6 / max(after.get("200", 0.0) - before.get("200", 0.0), 1.0)
            # 499: requests the client dropped when its time was up, not answers
            r["errors"] += int(sum(v - before.get(k, 0.0) for k, v in after.items() if k not in ("200", "499")))
            results[proto].append(r)
    finally:
        stop(server)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--client", choices=("h2load", "python"), default="h2load")
    ap.add_argument("--grpc-connections", type=int, default=1,
                    help="HTTP/2 connections (channels) carrying the gRPC streams (REST: one per request in flight)")
    args = ap.parse_args()
    if args.client == "h2load" and shutil.which("h2load") is None:
        sys.exit("h2load not found: apt-get install -y nghttp2-client (or --client python)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    with tempfile.TemporaryDirectory(prefix="loopml-grpc-bench-") as tmp_name:
        tmp = Path(tmp_name)
        env["LOOPML_HOME"] = str(tmp / "ws")
        proj, record = prepare(ROOT, tmp, env)
        results = measure_server(proj, env, record, args, tmp)
    print(f"\nloopml serve, model '{NAME}' (the loopml new example), {args.rows} row(s) per request, "
          f"{args.concurrency} requests in flight, {args.duration:g} s per round (first second not counted), "
          f"2 rounds each, client: {args.client}, gRPC over {args.grpc_connections} connection(s)\n")
    print("| protocol | requests/s | server CPU µs / request | mean ms | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    mean = {}
    for proto, rounds in results.items():
        m = {k: sum(r[k] for r in rounds) / len(rounds) for k in ("rps", "cpu_us", "mean", "p50", "p99")}
        mean[proto] = m
        p50, p99 = (f"{m[k]:.2f}" if m[k] == m[k] else "-" for k in ("p50", "p99"))  # h2load gives no percentiles
        print(f"| {proto} | {m['rps']:,.0f} | {m['cpu_us']:,.0f} | {m['mean']:.2f} | {p50} | {p99} | "
              f"{sum(r['errors'] for r in rounds)} |")
    ratio = mean["gRPC"]["rps"] / mean["REST"]["rps"] if mean["REST"]["rps"] else float("nan")
    cpu = mean["REST"]["cpu_us"] / mean["gRPC"]["cpu_us"] if mean["gRPC"]["cpu_us"] else float("nan")
    print(f"\ngRPC / REST throughput: {ratio:.2f}x (goal >= 1.0); REST / gRPC server CPU per request: {cpu:.2f}x")


if __name__ == "__main__":
    main()
