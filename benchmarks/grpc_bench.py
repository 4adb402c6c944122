"""gRPC vs REST throughput of one ``loopml serve`` process, same model, same row, one run.

    python benchmarks/grpc_bench.py [--duration 8] [--concurrency 16] [--rows 1] [--channels 1]

Scaffolds the ``loopml new`` project in a temporary folder, trains and registers its model,
starts ``loopml serve --grpc-port`` on it (one process answering both), then loads it with
the same kind of client for both protocols: a Python asyncio client (uvloop) in this process
keeping ``--concurrency`` requests in flight, closed loop, for ``--duration`` seconds, the
first second not counted. The request is built and serialized once, so the client's cost per
request is the transport's own:

- REST: OIP v2 JSON (one tensor per named column) on ``--concurrency`` keep-alive
  HTTP/1.1 connections to ``/v2/models/fraud/infer``;
- gRPC: the same tensors as ``ModelInferRequest`` with ``raw_input_contents``, serialized by
  tritonclient's own protobuf classes (what ``tritonclient.grpc`` sends), as concurrent
  streams over ``--channels`` grpc.aio channels (HTTP/2 connections).

The rounds alternate REST, gRPC, gRPC, REST, and the figures are the mean of the two rounds
of each, so a drift of the machine during the run counts against neither. Prints requests/s
and p50/p99 for each, and the ratio gRPC / REST. Every process started here is stopped by its
pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
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
    return {"rps": len(ok) / seconds, "p50": pct(ok, 0.5), "p99": pct(ok, 0.99), "errors": errors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--channels", type=int, default=1)
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    with tempfile.TemporaryDirectory(prefix="loopml-grpc-bench-") as tmp_name:
        tmp = Path(tmp_name)
        env["LOOPML_HOME"] = str(tmp / "ws")
        proj, record = prepare(ROOT, tmp, env)
        port, gport = free_port(), free_port()
        log = tmp / "server.log"
        server = start_server(ROOT, proj, env, port, ["--grpc-port", str(gport)], log)
        try:
            wait_ready(port, request_bytes(port, json.dumps({"dataframe_records": [record]}).encode()), server, log)
            import httpx

            inputs = httpx.get(f"http://127.0.0.1:{port}/v2/models/{NAME}").json()["inputs"]
            tensors = oip_tensors(record, inputs, args.rows)
            rest_req = rest_request(port, tensors, args.rows)
            greq = grpc_request(tensors, args.rows)
            measured = args.duration - 1.0
            grpc_load(gport, greq, 2, 2.0, 1, warmup=0)  # first calls: channel set-up, lazy imports
            results: dict[str, list[dict]] = {"REST": [], "gRPC": []}
            for proto in ("REST", "gRPC", "gRPC", "REST"):
                if proto == "REST":
                    by = load(port, rest_req, args.concurrency, args.duration)
                    ok = by.pop(200, [])
                else:
                    by = grpc_load(gport, greq, args.concurrency, args.duration, args.channels)
                    ok = by.pop("OK", [])
                results[proto].append(summary(ok, sum(len(v) for v in by.values()), measured))
                if by:
                    print(f"{proto}: non-OK answers {({k: len(v) for k, v in by.items()})}", file=sys.stderr)
        finally:
            stop(server)
    print(f"\nloopml serve, model '{NAME}' (the loopml new example), {args.rows} row(s) per request, "
          f"{args.concurrency} requests in flight, {args.duration:g} s per round (first second not counted), "
          f"2 rounds each, gRPC over {args.channels} channel(s)\n")
    print(f"| protocol | requests/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|")
    mean = {}
    for proto, rounds in results.items():
        m = {k: sum(r[k] for r in rounds) / len(rounds) for k in ("rps", "p50", "p99")}
        mean[proto] = m
        print(f"| {proto} | {m['rps']:,.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {sum(r['errors'] for r in rounds)} |")
    ratio = mean["gRPC"]["rps"] / mean["REST"]["rps"] if mean["REST"]["rps"] else float("nan")
    print(f"\ngRPC / REST throughput: {ratio:.2f}x (goal >= 1.0)")


if __name__ == "__main__":
    main()
