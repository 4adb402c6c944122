"""Slow and hostile clients: does ``loopml serve`` reap them, cap them, and keep answering?

    python benchmarks/hostile_bench.py [--src CHECKOUT] [--json out.json]

Scaffolds the ``loopml new`` project (helpers of ``overload_bench.py``), starts one
``loopml serve`` on 127.0.0.1 (from ``--src``, default this checkout; pass a git worktree of an
older commit to measure that) with short timeouts so the run is quick: header 2 s, body 3 s,
keep-alive 2 s. A flag the served checkout does not have (``loopml serve --help`` says) is left
out, so the same script measures the code before the limits existed. Then, each scenario
bounded in time:

1. 1,000 sockets that send nothing and 500 that send half a request header: the server's
   ESTABLISHED connections on its port (``ss``) header timeout + 1 s later, how many clients
   got a 408, and the latency of health probes (a fresh connection every 20 ms) meanwhile;
2. 100 clients each send the headers of a 9 MB body and its first 1 MB, then stall: the
   server's peak RSS (``/proc/PID/status`` sampled every 20 ms) and, body timeout + 2 s
   later, how many got a 408 and how many connections the server still holds;
3. one 64 MB header streamed as fast as the socket takes it: health-probe latency meanwhile,
   the bytes the server took before closing, and the answer the hostile client reads;
4. a 60 KB ``x-request-id`` (and a 20 KB one, under the 32 KiB header cap) on a valid
   prediction: the statuses, and whether each id is in the prediction log (a control request
   with an ordinary id proves the log is read).

Every process started here is stopped by its pid; every socket is closed.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overload_bench import (NAME, ROOT, free_port, loopml, pct, prepare, request_bytes,  # noqa: E402
                            start_server, stop, wait_ready)

HEADER_TIMEOUT_S, BODY_TIMEOUT_S, KEEPALIVE_TIMEOUT_S = 2.0, 3.0, 2.0
FLAGS = {"--header-timeout-s": HEADER_TIMEOUT_S, "--body-timeout-s": BODY_TIMEOUT_S,
         "--keepalive-timeout-s": KEEPALIVE_TIMEOUT_S}
HEALTH = b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def supported_flags(src: Path, env: dict) -> dict[str, float]:
    """The short-timeout flags the served checkout knows (older ones had none of them)."""
    p = loopml(src, "serve", "--help", env={**env, "COLUMNS": "300"}, stdout=subprocess.PIPE,
               stderr=subprocess.STDOUT, text=True)
    out, _ = p.communicate(timeout=120)
    return {flag: value for flag, value in FLAGS.items() if flag in out}


def established(port: int) -> int:
    """Server-side ESTABLISHED connections on ``port`` (local port = the server's)."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"], capture_output=True,
                         text=True, timeout=30).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def tree_pids(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return pids


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """``field`` of /proc/PID/status summed over the server's process tree, in MB."""
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class Prober:
    """Health probes on a fresh connection every 20 ms, in a thread, until stopped."""

    def __init__(self, port: int) -> None:
        self.port, self.latencies, self.failures = port, [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
                    s.sendall(HEALTH)
                    ok = s.recv(64).startswith(b"HTTP/1.1 200")
                self.latencies.append((time.perf_counter() - t0) * 1000)
                self.failures += not ok
            except OSError:
                self.failures += 1
            self._stop.wait(0.02)

    def __enter__(self) -> "Prober":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(40)

    def summary(self) -> dict:
        lat = self.latencies
        return {"probes": len(lat), "probe_failures": self.failures, "probe_p50_ms": pct(lat, 0.5),
                "probe_p99_ms": pct(lat, 0.99), "probe_max_ms": max(lat, default=float("nan"))}


def answers(socks: list[socket.socket], prefix: bytes) -> tuple[int, int]:
    """How many sockets have an answer starting with ``prefix`` waiting, and how many the server closed."""
    got = closed = 0
    for s in socks:
        s.setblocking(False)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
            closed += 1  # recv returned b"": the server closed its side
        except BlockingIOError:
            pass
        except OSError:  # reset: closed as well
            closed += 1
        got += data.startswith(prefix)
    return got, closed


def drain(port: int, socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()
    end = time.monotonic() + 30
    while time.monotonic() < end and established(port) > 0:
        time.sleep(0.2)


def idle_and_half_headers(port: int, idle: int = 1000, half: int = 500) -> dict:
    socks: list[socket.socket] = []
    with Prober(port) as prober:
        try:
            for i in range(idle + half):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                socks.append(s)
                if i >= idle:
                    s.sendall(b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
            opened = time.monotonic()
            time.sleep(0.5)
            at_start = established(port)
            time.sleep(max(0.0, opened + HEADER_TIMEOUT_S + 1 - time.monotonic()))
            left = established(port)
            got_408, closed = answers(socks, b"HTTP/1.1 408")
        finally:
            drain(port, socks)
    return {"sockets": idle + half, "open_at_start": at_start, "open_after_timeout_plus_1s": left,
            "got_408": got_408, "closed_by_server": closed, **prober.summary()}


def stalled_bodies(port: int, pid: int, clients: int = 100) -> dict:
    size, sent_mb = 9 * 2**20, 1
    head = (f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    chunk = b"[" + b"1," * (sent_mb * 2**20 // 2)
    socks: list[socket.socket] = []
    peak, stop_sampling = [rss_mb(pid)], threading.Event()
    base = peak[0]

    def sample():
        while not stop_sampling.is_set():
            peak[0] = max(peak[0], rss_mb(pid))
            stop_sampling.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        for _ in range(clients):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            socks.append(s)
            s.sendall(head + chunk)
        sent = time.monotonic()
        time.sleep(max(0.0, sent + BODY_TIMEOUT_S + 2 - time.monotonic()))
        left = established(port)
        got_408, closed = answers(socks, b"HTTP/1.1 408")
    finally:
        stop_sampling.set()
        sampler.join(10)
        drain(port, socks)
    return {"clients": clients, "rss_before_mb": base, "rss_peak_mb": peak[0], "rss_growth_mb": peak[0] - base,
            "vmhwm_mb": rss_mb(pid, "VmHWM"), "got_408": got_408, "closed_by_server": closed,
            "open_after_timeout_plus_2s": left}


def huge_header(port: int, total: int = 64 * 2**20, limit_s: float = 60.0) -> dict:
    """Stream a header of ``total`` bytes as fast as the socket takes it; read whatever the
    server answers meanwhile (the answer may come, and the server close, mid-stream)."""
    out = {"bytes_sent": 0, "ended": f"gave up after {limit_s:g} s"}
    answer, block = b"", b"a" * (1 << 20)
    with Prober(port) as prober:
        time.sleep(0.3)  # a few probes first, as a baseline in the same figures
        t0 = time.monotonic()
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setblocking(False)
        pending = memoryview(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nx-big: ")
        left, tail_sent = total, False
        try:
            while time.monotonic() - t0 < limit_s:
                if not pending and left > 0:
                    pending, left = memoryview(block[:min(len(block), left)]), left - min(len(block), left)
                elif not pending and not tail_sent:
                    pending, tail_sent = memoryview(b"\r\n\r\n"), True
                r, w, _ = select.select([s], [s] if pending else [], [], 1.0)
                if w:
                    n = s.send(pending)
                    out["bytes_sent"] += n
                    pending = pending[n:]
                if r:
                    data = s.recv(65536)
                    if not data:
                        out["ended"] = "closed by the server"
                        break
                    answer += data
                    if b"\r\n\r\n" in answer:
                        out["ended"] = "answered"
                        break
        except OSError as e:
            out["ended"] = type(e).__name__
            try:  # the answer may be waiting behind the reset
                answer += s.recv(65536)
            except OSError:
                pass
        finally:
            s.close()
        out["seconds"] = time.monotonic() - t0
        time.sleep(0.3)
    out["answer"] = answer.split(b"\r\n", 1)[0].decode(errors="replace") or "none read"
    return {**out, **prober.summary()}


def logged_ids(home: Path) -> set[str]:
    import pyarrow.parquet as pq

    ids: set[str] = set()
    for f in home.rglob("*.parquet"):
        try:
            table = pq.read_table(f, columns=["request_id"])
        except (KeyError, ValueError, OSError):
            continue  # not a prediction log file
        ids.update(str(v) for v in table.column("request_id").to_pylist() if v is not None)
    return ids


def long_request_ids(port: int, body: bytes, home: Path) -> dict:
    ids = {"60 KB": uuid.uuid4().hex * (60 * 1024 // 32), "20 KB": uuid.uuid4().hex * (20 * 1024 // 32),
           "control": f"hostile-bench-{uuid.uuid4().hex}"}
    statuses = {}
    for label, rid in ids.items():
        req = (f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"x-request-id: {rid}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            try:
                s.sendall(req)
                statuses[label] = s.recv(64).split(b"\r\n", 1)[0].decode(errors="replace")[9:12] or "none"
            except OSError as e:
                statuses[label] = type(e).__name__
    found, end = set(), time.monotonic() + 15
    while time.monotonic() < end and ids["control"] not in found:  # the log flushes every second
        time.sleep(1.0)
        found = logged_ids(home)
    return {label: {"length": len(rid), "status": statuses[label], "in_log": rid in found}
            for label, rid in ids.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", type=Path, default=ROOT, help="checkout whose loopml is served (default: this one)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if not shutil.which("ss"):
        sys.exit("ss not found: apt-get install -y iproute2")
    src = args.src.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="loopml-hostile-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    env.update(LOOPML_HOME=str(tmp / "ws"))
    server = None
    try:
        flags = supported_flags(src, env)
        extra = [a for flag, value in flags.items() for a in (flag, f"{value:g}")]
        proj, record = prepare(src, tmp, env)
        body = json.dumps({"dataframe_records": [record]}).encode()
        port = free_port()
        log = tmp / "server.log"
        server = start_server(src, proj, env, port, extra, log)
        wait_ready(port, request_bytes(port, body), server, log)
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        print(f"# hostile clients: loopml serve from {src} ({commit}), model '{NAME}' (loopml new), "
              f"flags {' '.join(extra) or 'none (this checkout has none of them)'}; {os.cpu_count()} cores")
        results = {"commit": commit, "flags": extra}
        for name, run in (("idle", lambda: idle_and_half_headers(port)),
                          ("bodies", lambda: stalled_bodies(port, server.pid)),
                          ("header", lambda: huge_header(port)),
                          ("request_id", lambda: long_request_ids(port, body, tmp / "ws"))):
            results[name] = run()
            print(name, json.dumps(results[name], default=str))
            if server.poll() is not None:
                sys.exit(f"server died during '{name}': {log.read_text()[-2000:]}")
        print()
        print(table(results))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
    finally:
        if server is not None:
            stop(server)
        shutil.rmtree(tmp, ignore_errors=True)


def table(r: dict) -> str:
    i, b, h, q = r["idle"], r["bodies"], r["header"], r["request_id"]
    rows = [
        ("1,000 idle + 500 half-header sockets: open after header timeout + 1 s",
         f"{i['open_after_timeout_plus_1s']:,} of {i['open_at_start']:,} (408s: {i['got_408']})"),
        ("  health probes meanwhile: p50 / p99 / max",
         f"{i['probe_p50_ms']:.1f} / {i['probe_p99_ms']:.1f} / {i['probe_max_ms']:.1f} ms ({i['probe_failures']} failed)"),
        ("100 stalled 9 MB bodies (1 MB sent): server RSS growth (peak)",
         f"+{b['rss_growth_mb']:,.0f} MB ({b['rss_peak_mb']:,.0f} MB)"),
        ("  408s / open after body timeout + 2 s",
         f"{b['got_408']} / {b['open_after_timeout_plus_2s']}"),
        ("64 MB header: health probes meanwhile p99 / max",
         f"{h['probe_p99_ms']:.1f} / {h['probe_max_ms']:,.1f} ms ({h['probe_failures']} failed)"),
        ("  hostile client: bytes taken, answer",
         f"{h['bytes_sent'] / 2**20:,.1f} MB in {h['seconds']:.1f} s, '{h['answer']}' ({h['ended']})"),
    ]
    for label in ("60 KB", "20 KB", "control"):
        x = q[label]
        rows.append((f"x-request-id {label} ({x['length']:,} chars): status, in prediction log",
                     f"{x['status']}, {'yes' if x['in_log'] else 'no'}"))
    lines = [f"| scenario | {r['commit']} |", "|---|---|"]
    lines += [f"| {a} | {v} |" for a, v in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
