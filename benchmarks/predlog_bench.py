"""Prediction-log benchmark: window reads before/after compaction, and the cost and the loss
window of the two durability modes against a real ``loopml serve``.

    python benchmarks/predlog_bench.py [--parts 20000] [--duration 10] [--skip-serve]

1. Window reads (15-minute window, ``read_predictions(since=now-900)``, and the controller's
   ``last=3000``), median of repeated reads:
   - before: today's layout read as it was (glob every part, DuckDB filters by ts) over
     ``--parts`` flat parts at one flush per second (2 rows each);
   - after, same data: the new reader on those parts (pruned by name), then after
     :func:`loopml.monitor.compaction.compact_log`;
   - after, 30 days of history at one flush per second: 720 compacted hour files, the current
     hour as compaction leaves it (one file per minute) and the last minute's fresh parts.
2. Serving (``--duration`` s per mode): wrk, 1-row requests, 64 connections, against
   ``loopml serve`` with ``LOOPML_PREDICTION_LOG_MODE=async`` then ``acknowledged``.
3. Loss on SIGKILL: a Python load generator (8 threads) with unique ``x-request-id``s; the
   server is SIGKILLed after ~3 s; the share of requests answered 200 that are not in the
   log, per mode.

Every process the script starts is stopped by its pid. Needs ``wrk`` (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import glob
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

HOUR = 3600


def _table(start: float, n: int, step: float = 0.5):
    import numpy as np
    import pyarrow as pa

    ts = start + np.arange(n) * step
    return pa.table({
        "request_id": pa.array([f"r{t:.3f}" for t in ts]),
        "ts": pa.array((ts * 1e9).astype("int64"), type=pa.timestamp("ns", tz="UTC")),
        "model": pa.array(["m"] * n), "version": pa.array(["1"] * n), "variant": pa.array(["champion"] * n),
        "in.f0": pa.array(np.sin(ts)), "in.f1": pa.array(np.cos(ts)),
        "out.prediction": pa.array((ts % 2 > 1).astype("int64")), "out.proba": pa.array(np.abs(np.sin(ts))),
    })


def _write(folder: Path, prefix: str, table) -> None:
    import pyarrow.parquet as pq

    from loopml.monitor.logfiles import file_name, ts_range_ms

    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / file_name(prefix, *ts_range_ms(table), table.num_rows))


def flat_parts(root: Path, model: str, n_parts: int, now: float) -> None:
    """One part per second (2 rows each) for the last ``n_parts`` seconds."""
    for k in range(n_parts):
        _write(root / model, "part-", _table(now - n_parts + k, 2))


def thirty_days(root: Path, model: str, now: float) -> None:
    """30 days compacted by hour, the current hour by minute, the last minute as fresh parts."""
    from loopml.monitor.logfiles import hour_dir

    hour0 = now - now % HOUR
    for h in range(30 * 24, 0, -1):
        start = hour0 - h * HOUR
        _write(root / model / hour_dir(int(start * 1000)), "c-", _table(start, 2 * HOUR))
    minute0 = now - now % 60
    for m in range(int((minute0 - hour0) // 60)):
        start = hour0 + m * 60
        _write(root / model / hour_dir(int(start * 1000)), "c-", _table(start, 120))
    for s in range(int(now - minute0)):
        _write(root / model, "part-", _table(minute0 + s, 2))


def old_read(root: Path, model: str, since: float):
    """Today's reader before this change: every part, filtered by DuckDB."""
    import duckdb

    files = sorted(glob.glob(str(root / model / "part-*.parquet")))
    con = duckdb.connect()
    try:
        return con.execute("SELECT * FROM read_parquet(?, union_by_name=true) "
                           "WHERE CAST(ts AS TIMESTAMPTZ) >= to_timestamp(?) ORDER BY ts", [files, since]).df()
    finally:
        con.close()


def timed(fn, repeat: int) -> tuple[float, int]:
    times, n = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = len(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000, n


def bench_reads(tmp: Path, n_parts: int) -> list[tuple[str, float, int]]:
    from loopml.monitor.compaction import compact_log
    from loopml.monitor.logread import read_predictions

    now = time.time()
    rows = []
    print(f"writing {n_parts} flat parts ...", file=sys.stderr)
    flat_parts(tmp, "flat", n_parts, now)
    since = now - 900
    rows.append((f"before: glob of every part ({n_parts} parts), 15-min window", *timed(lambda: old_read(tmp, "flat", since), 3)))
    rows.append((f"after: pruned by name, same {n_parts} parts", *timed(lambda: read_predictions(tmp, "flat", since=since), 10)))
    t0 = time.perf_counter()
    compact_log(tmp, "flat", now=now)
    print(f"compacting {n_parts} parts took {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    rows.append(("after: same data compacted, 15-min window", *timed(lambda: read_predictions(tmp, "flat", since=since), 10)))
    print("writing 30 days of history ...", file=sys.stderr)
    thirty_days(tmp, "hist", now)
    rows.append(("after: 30 days (720 hour files + minute files + fresh parts), 15-min window",
                 *timed(lambda: read_predictions(tmp, "hist", since=since), 20)))
    rows.append(("after: 30 days, controller's last=3000", *timed(lambda: read_predictions(tmp, "hist", last=3000), 20)))
    return rows


# -- serving ------------------------------------------------------------------------------------

def start_server(home: Path, tracking: str, mode: str):
    from serve_bench import NAME, free_port, wait_http

    port = free_port()
    env = {**os.environ, "LOOPML_HOME": str(home), "MLFLOW_TRACKING_URI": tracking,
           "LOOPML_PREDICTION_LOG_MODE": mode}
    env.pop("LOOPML_ADMIN_TOKEN", None)
    log = open(home.parent / f"serve-{mode}.log", "a")  # noqa: SIM115 - closed with the temp folder
    p = subprocess.Popen([sys.executable, "-c", "from loopml.cli.main import main; main()", "serve", "-m",
                          f"{NAME}@champion", "--host", "127.0.0.1", "--port", str(port)],
                         env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}/invocations"
    wait_http(url, proc=p)
    return p, url


def loss_on_sigkill(home: Path, tracking: str, mode: str, seconds: float = 3.0) -> tuple[int, int]:
    import httpx

    from serve_bench import FEATURES, NAME

    from loopml.monitor.logread import read_predictions

    p, url = start_server(home, tracking, mode)
    answered: list[str] = []
    body = {"dataframe_split": {"columns": FEATURES, "data": [[0.1] * 20]}}

    def client(k: int) -> None:
        with httpx.Client(timeout=10) as c:
            i = 0
            while True:
                rid = f"{mode}-{k}-{i}"
                i += 1
                try:
                    r = c.post(url, json=body, headers={"x-request-id": rid})
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    answered.append(rid)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(8)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(30)
    for t in threads:
        t.join(30)
    logged = set(read_predictions(home / "predictions", NAME)["request_id"])
    return sum(1 for rid in answered if rid not in logged), len(answered)


def bench_serving(tmp: Path, duration: int) -> tuple[dict, dict]:
    from serve_bench import lua_script, stop, train_and_register, wrk

    print("training and registering the reference model ...", file=sys.stderr)
    tracking = train_and_register(tmp / "ws")
    script = lua_script(1, tmp)
    rates = {}
    for mode in ("async", "acknowledged"):
        p, url = start_server(tmp / "ws", tracking, mode)
        try:
            wrk(url, script, 64, 2)  # warm-up
            rates[mode] = wrk(url, script, 64, duration)
        finally:
            stop(p)
    losses = {mode: loss_on_sigkill(tmp / "ws", tracking, mode) for mode in ("async", "acknowledged")}
    return rates, losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", type=int, default=20000, help="flat parts for the before/after read")
    ap.add_argument("--duration", type=int, default=10, help="seconds of wrk per mode")
    ap.add_argument("--skip-serve", action="store_true", help="window reads only")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="loopml-predlog-bench-") as tmp:
        tmp = Path(tmp)
        reads = bench_reads(tmp / "logs", args.parts)
        print("\n| window read | median ms | rows |\n|---|---|---|")
        for label, ms, n in reads:
            print(f"| {label} | {ms:.1f} | {n} |")
        print("\nGoal: a 15-minute window in under 200 ms with 30 days of history.")
        if args.skip_serve:
            return
        rates, losses = bench_serving(tmp, args.duration)
        base = rates["async"]["rps"]
        print(f"\n| mode | req/s | p50 ms | p99 ms | vs async | answered 200 then lost on SIGKILL |\n|---|---|---|---|---|---|")
        for mode in ("async", "acknowledged"):
            r, (lost, answered) = rates[mode], losses[mode]
            print(f"| {mode} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                  f"{100 * r['rps'] / base:.0f}% | {lost} of {answered} ({100 * lost / max(answered, 1):.1f}%) |")
        print(f"\nwrk -t2 -c64, {args.duration} s, 1-row POST /invocations; loss: 8 Python clients, SIGKILL after 3 s.")


if __name__ == "__main__":
    main()
