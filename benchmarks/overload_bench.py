"""Overload benchmark: does ``loopml serve`` shed load early and stay fast for what it accepts?

    python benchmarks/overload_bench.py [--duration 8] [--src CHECKOUT] [--serve-arg=--max-inflight=0]
        [--anchor-src OLD_CHECKOUT | --anchor-arg=--predict-in-thread=never | --no-anchor] [--connections N]

Scaffolds the ``loopml new`` project in a temporary folder, trains and registers its model,
starts ``loopml serve`` on it (from ``--src``, default this checkout) and beside it an anchor
serving the same model: ``--anchor-src`` (a git worktree of an older commit), else this
checkout with ``--anchor-arg`` flags (default ``--predict-in-thread=never``: the model on the
event loop, as before it was an option). Every phase below runs on both, one after the other,
alternating which goes first, so the two see the same machine (a shared VM's load moves a lot
within minutes). Then:

1. capacity: wrk (2 threads) at 4..512 connections, 3 s each; capacity = the fewest
   connections reaching 90% of the best throughput of 200s (503s do not count: a server that
   sheds answers more requests per second the more connections it refuses);
2. load at 1x, 2x and 4x that many connections for ``--duration`` seconds each, from a small
   asyncio load generator (uvloop, one keep-alive connection per client, closed loop like
   wrk, no back-off on 503: the worst case). wrk cannot tell the latency of a 200 from that
   of a 503 (its Lua ``response`` hook gets no timing, and its Lua state is per thread, not
   per connection); the generator times every answer by status. The first second of each
   burst (connection set-up) is not counted;
3. right after each burst (the generator has dropped its connections mid-request, as wrk
   does, leaving their queued requests behind) one fresh request on a new connection, timed;
4. open loop: requests sent at a fixed rate, 1x and 2x the 200s per second of the 1x burst,
   each on a free keep-alive connection (a new one when none is free), timed from the moment
   it was due (no coordinated omission). Why both: with N closed-loop clients that never back
   off, Little's law makes the mean answer time N / (answers per second), so at 2x
   connections the 503s wait behind the other clients' requests however cheap a 503 is (1,000
   clients at 4,000 answers/s: 250 ms). At a fixed arrival rate the server is not flooded by
   its own fast answers, and a 503's time is its own cost plus whatever blocks the event loop.

Prints, per load: requests/s answered, the 503 share, p99 of the 200s and its ratio to 1x,
p50/p99 of the 503s, and the fresh request. Every process started here is stopped by its
pid. Needs ``wrk`` (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "fraud"


def loopml(src: Path, *args: str, env: dict, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from loopml.cli.main import main; main()", *args]
    return subprocess.Popen(cmd, env={**env, "PYTHONPATH": str(src / "src")}, **kw)


def prepare(src: Path, tmp: Path, env: dict) -> tuple[Path, dict]:
    """The ``loopml new`` project, trained and registered; and one request row from its data."""
    proj = tmp / "proj"
    for args in (["new", str(proj)], ["run", "--project", str(proj)]):
        p = loopml(src, *args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _, err = p.communicate(timeout=600)
        if p.returncode:
            sys.exit(f"loopml {' '.join(args)} failed: {err[-2000:]}")
    with open(proj / "data" / "transactions.csv") as f:
        row = next(csv.DictReader(f))
    row.pop("is_fraud", None)
    record = {k: (float(v) if _is_number(v) else v) for k, v in row.items()}
    return proj, record


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(src: Path, proj: Path, env: dict, port: int, extra: list[str], log: Path) -> subprocess.Popen:
    out = open(log, "w")  # noqa: SIM115 - closed with the temp folder; a pipe nobody reads would block
    p = loopml(src, "serve", "-m", f"{NAME}@champion", "--project", str(proj), "--host", "127.0.0.1",
               "--port", str(port), *extra, env=env, stdout=subprocess.DEVNULL, stderr=out,
               start_new_session=True)
    return p


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)  # the session this script created for the server
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def request_bytes(port: int, body: bytes) -> bytes:
    return (f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _exchange(reader, writer, req: bytes) -> int:
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    if b"connection: close" in head.lower():
        writer.close()
        raise ConnectionResetError("server closed")
    return status


def one_request(port: int, req: bytes, timeout: float = 300.0) -> tuple[int, float]:
    """Status and milliseconds of one request on a new connection."""

    async def go():
        t0 = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            status = await asyncio.wait_for(_exchange(reader, writer, req), timeout)
        finally:
            writer.close()
        return status, (time.perf_counter() - t0) * 1000

    return asyncio.run(go())


def wait_ready(port: int, req: bytes, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if one_request(port, req, 5)[0] == 200:
                return
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass
        time.sleep(0.25)
    sys.exit("server did not come up")


def load(port: int, req: bytes, connections: int, seconds: float, warmup: float = 1.0) -> dict[int, list[float]]:
    """Closed-loop requests on ``connections`` keep-alive connections for ``seconds``; the
    latencies (ms) of requests started after ``warmup``, by status (0: connection error)."""
    by_status: dict[int, list[float]] = {}

    async def worker(start: float, end: float):
        reader = writer = None
        while time.monotonic() < end:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                started, t0 = time.monotonic(), time.perf_counter()
                status = await _exchange(reader, writer, req)
                if started >= start:
                    by_status.setdefault(status, []).append((time.perf_counter() - t0) * 1000)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
                by_status.setdefault(0, []).append(0.0)
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)
        if writer is not None:
            writer.close()

    async def main():
        now = time.monotonic()
        tasks = [asyncio.ensure_future(worker(now + warmup, now + seconds)) for _ in range(connections)]
        await asyncio.sleep(seconds)
        for t in tasks:  # drop every connection mid-request, as wrk does when its time is up
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    return by_status


def open_loop(port: int, req: bytes, rate: float, seconds: float, warmup: float = 1.0,
              max_connections: int = 4096) -> dict[int, list[float]]:
    """Requests at ``rate`` per second for ``seconds``; latencies (ms, from the moment each was
    due) of those due after ``warmup``, by status (0: connection error or no connection free)."""
    by_status: dict[int, list[float]] = {}
    idle: list = []
    opened = [0]

    async def one(due: float, counted: bool):
        conn = idle.pop() if idle else None
        try:
            if conn is None:
                if opened[0] >= max_connections:
                    raise OSError("no connection free")
                opened[0] += 1
                conn = await asyncio.open_connection("127.0.0.1", port)
            status = await _exchange(conn[0], conn[1], req)
            idle.append(conn)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
            status = 0
            if conn is not None:
                conn[1].close()
                opened[0] -= 1
        if counted:
            by_status.setdefault(status, []).append((time.monotonic() - due) * 1000)

    async def main():
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        tasks = set()
        n = int(rate * seconds)
        for i in range(n):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            t = loop.create_task(one(due, due - start >= warmup))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        await asyncio.sleep(0.5)  # answers still on their way count; the rest is dropped, as in a burst
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _, w in idle:
            w.close()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    return by_status


WRK_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {body}
done = function(summary, latency, requests)
  io.write(string.format("LOOPML %d %d %d %d %d %.1f\\n", summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write, summary.errors.timeout,
    summary.duration, latency:percentile(99)))
end
"""


def wrk(port: int, script: Path, connections: int, seconds: int) -> dict:
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "60s", "-s", str(script),
                          f"http://127.0.0.1:{port}/invocations"], capture_output=True, text=True, timeout=seconds + 120)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("LOOPML ")), None)
    if line is None:
        raise RuntimeError(f"cannot parse wrk output:\n{out.stdout}\n{out.stderr}")
    n, non2xx, sock_errors, timeouts, micros, p99 = line.split()[1:]
    n, micros = int(n), int(micros)
    return {"rps": n / (micros / 1e6), "ok_rps": (n - int(non2xx)) / (micros / 1e6), "requests": n,
            "non2xx": int(non2xx), "socket_errors": int(sock_errors),
            "timeouts": int(timeouts), "p99_ms": float(p99) / 1000}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def capacity(port: int, script: Path) -> tuple[int, list[tuple[int, float]]]:
    curve = []
    for c in (4, 8, 16, 32, 64, 128, 256, 512):
        curve.append((c, wrk(port, script, c, 3)["ok_rps"]))
    best = max(r for _, r in curve)
    knee = next(c for c, r in curve if r >= 0.9 * best)
    return knee, curve


def burst(port: int, req: bytes, connections: int, seconds: int) -> dict:
    by_status = load(port, req, connections, seconds)
    status, fresh_ms = one_request(port, req)  # the clients are gone; their queued requests may not be
    ok, shed = by_status.get(200, []), by_status.get(503, [])
    n = sum(len(v) for v in by_status.values())
    return {"rps": n / (seconds - 1.0), "requests": n, "statuses": {k: len(v) for k, v in by_status.items()},
            "p99_200": pct(ok, 0.99), "p50_200": pct(ok, 0.5), "p50_503": pct(shed, 0.5), "p99_503": pct(shed, 0.99),
            "share_503": len(shed) / max(n, 1), "fresh_status": status, "fresh_ms": fresh_ms}


def paced(port: int, req: bytes, rate: float, seconds: int) -> dict:
    by_status = open_loop(port, req, rate, seconds)
    status, fresh_ms = one_request(port, req)
    ok, shed = by_status.get(200, []), by_status.get(503, [])
    n = sum(len(v) for v in by_status.values())
    return {"rate": rate, "requests": n, "statuses": {k: len(v) for k, v in by_status.items()},
            "p99_200": pct(ok, 0.99), "p50_200": pct(ok, 0.5), "p50_503": pct(shed, 0.5), "p99_503": pct(shed, 0.99),
            "share_503": len(shed) / max(n, 1), "fresh_status": status, "fresh_ms": fresh_ms}


def settle(port: int, req: bytes) -> None:
    """Wait until a fresh request is quick again, so one burst's leftovers do not weigh on the next."""
    end = time.monotonic() + 300
    while time.monotonic() < end and one_request(port, req)[1] > 50:
        time.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=8, help="seconds per burst")
    ap.add_argument("--src", type=Path, default=ROOT, help="checkout whose loopml is served (default: this one)")
    ap.add_argument("--serve-arg", action="append", default=[], help="extra 'loopml serve' argument (repeatable)")
    ap.add_argument("--anchor-src", type=Path, help="also serve this checkout (e.g. a git worktree of an older "
                    "commit) and measure it phase by phase beside --src, alternating which goes first")
    ap.add_argument("--anchor-arg", action="append", default=[], help="extra 'loopml serve' argument of the anchor "
                    "(repeatable; with no --anchor-src the anchor is this checkout with these arguments)")
    ap.add_argument("--no-anchor", action="store_true", help="measure --src alone")
    ap.add_argument("--connections", type=int, help="skip the capacity search: 1x = this many connections")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")
    src = args.src.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="loopml-overload-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    env.update(LOOPML_HOME=str(tmp / "ws"))
    proj, record = prepare(src, tmp, env)
    body = json.dumps({"dataframe_records": [record]}).encode()
    script = tmp / "post.lua"
    script.write_text(WRK_LUA.format(body=json.dumps(body.decode())))
    # (label, checkout, extra args): "ours" and, when asked, the anchor; both serve the same model
    wanted = [("ours", src, args.serve_arg)]
    if not args.no_anchor:
        if not (args.anchor_src or args.anchor_arg) and src == ROOT:
            args.anchor_arg = ["--predict-in-thread=never"]
        wanted.insert(0, ("anchor", (args.anchor_src or src).resolve(), args.anchor_arg))
    servers: dict[str, tuple[subprocess.Popen, int, bytes]] = {}
    try:
        for label, where, extra in wanted:
            port = free_port()
            log = tmp / f"server-{label}.log"
            proc = start_server(where, proj, env, port, extra, log)
            servers[label] = (proc, port, request_bytes(port, body))
            wait_ready(port, servers[label][2], proc, log)
            commit = subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip()
            print(f"# {label}: loopml serve from {where} ({commit}), model '{NAME}' (loopml new), POST /invocations "
                  f"one row; extra args {extra or 'none'}; {os.cpu_count()} cores")
            for line in log.read_text().splitlines():  # its runtime and where it predicts (newer servers)
                if line.startswith(f"loopml serve: {NAME} version"):
                    print("#", line)
            wrk(port, script, 16, 2)  # warm-up
        if args.connections:
            knee, curve = args.connections, []
        else:
            knee, curve = capacity(servers["ours"][1], script)
            print("capacity curve of ours (connections: 200s/s): " + ", ".join(f"{c}: {r:,.0f}" for c, r in curve))
        print(f"capacity: {knee} connections")
        labels = list(servers)
        rows: dict[str, list[dict]] = {label: [] for label in labels}
        paced_rows: dict[str, list[dict]] = {label: [] for label in labels}
        phase = 0

        def each(run) -> None:  # one phase on every server, the first one alternating between phases
            nonlocal phase
            order = labels if phase % 2 == 0 else labels[::-1]
            phase += 1
            for label in order:
                _, port, req = servers[label]
                settle(port, req)
                run(label, port, req)

        for mult in (1, 2, 4):
            def closed(label, port, req, mult=mult):
                r = burst(port, req, knee * mult, args.duration)
                r.update(mult=mult, connections=knee * mult)
                rows[label].append(r)
                print(label, json.dumps(r))
            each(closed)
        # one rate for every server: the mean of their 200s per second at 1x
        capacity_rps = sum(rows[label][0]["statuses"].get(200, 0) for label in labels) / len(labels) / (args.duration - 1.0)
        for mult in (1, 2):
            def opened(label, port, req, mult=mult):
                r = paced(port, req, mult * capacity_rps, args.duration)
                r.update(mult=mult)
                paced_rows[label].append(r)
                print(label, json.dumps(r))
            each(opened)
        print()
        print("| load | server | connections | answers/s | 200s/s | 503 share | p50 / p99 of 200s | p99 vs 1x "
              "| p50 / p99 of 503s | fresh request after |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for i in range(3):
            for label in labels:
                r, base = rows[label][i], rows[label][0]["p99_200"]
                ok_rate = r["statuses"].get(200, 0) / (args.duration - 1.0)
                print(f"| {r['mult']}x | {label} | {r['connections']} | {r['rps']:,.0f} | {ok_rate:,.0f} "
                      f"| {r['share_503']:.1%} | {r['p50_200']:.1f} / {r['p99_200']:.1f} ms | {r['p99_200'] / base:.2f}x "
                      f"| {r['p50_503']:.2f} / {r['p99_503']:.2f} ms | {r['fresh_ms']:.1f} ms ({r['fresh_status']}) |")
        print(f"\nopen loop: requests at a fixed rate, 1x = {capacity_rps:,.0f}/s (the 200s/s at 1x connections); "
              "latency from the moment each request was due")
        print("| load | server | rate/s | 200s/s | 503 share | errors | p50 / p99 of 200s | p50 / p99 of 503s "
              "| fresh request after |")
        print("|---|---|---|---|---|---|---|---|---|")
        for i in range(2):
            for label in labels:
                r = paced_rows[label][i]
                ok_rate = r["statuses"].get(200, 0) / (args.duration - 1.0)
                print(f"| {r['mult']}x | {label} | {r['rate']:,.0f} | {ok_rate:,.0f} | {r['share_503']:.1%} "
                      f"| {r['statuses'].get(0, 0)} | {r['p50_200']:.1f} / {r['p99_200']:.1f} ms "
                      f"| {r['p50_503']:.2f} / {r['p99_503']:.2f} ms | {r['fresh_ms']:.1f} ms ({r['fresh_status']}) |")
        print("\ngoal at 2x: p99 of 200s within 3x of 1x, 503s under 5 ms, fresh request under 100 ms")
        print(f"machine load average at the end (1, 5, 15 min): {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
              f"on {os.cpu_count()} cores")
        if args.json:
            args.json.write_text(json.dumps({"capacity": knee, "curve": curve, "rows": rows, "open_loop": paced_rows},
                                            indent=2))
    finally:
        for proc, _, _ in servers.values():
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
