"""State store benchmark: one controller tick's worth of transactions, before vs after #11.

    python benchmarks/store_bench.py [--ticks 300] [--rounds 5] [--threads 4]

From one run, on this machine:

1. anchor (before): ``loop/state.py`` as it was before the store (raw ``sqlite3``, a
   connection and ``CREATE TABLE IF NOT EXISTS`` per transaction), loaded from git
   (``ANCHOR_COMMIT``) into a temporary module;
2. ours on SQLite (the default ``sqlite:///<home>/state.db``, SQLAlchemy Core, BEGIN IMMEDIATE);
3. ours on PostgreSQL (a private server on 127.0.0.1 started by ``loopml.platform.postgres``,
   SERIALIZABLE, re-run on conflict);
4. contention: ``--threads`` threads each counting failures of one cause (read-modify-write)
   on PostgreSQL: every increment must survive (lost updates: 0) and how many conflicts were re-run.

A "tick" is what a controller does per loop turn without a rollout: add a trigger, claim it,
finish it, put and get a small value (5 transactions). The three run in interleaved rounds
(median round); printed: ticks/s and ms per transaction for each, and the time ratio to the
anchor. Absolute figures depend on the machine's load; the ratio is the figure.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANCHOR_COMMIT = "74433f7"  # the last commit with the sqlite3-only state.py


def load_anchor(tmp: Path):
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{ANCHOR_COMMIT}:src/loopml/loop/state.py"],
                         capture_output=True, text=True, check=True).stdout
    path = tmp / "anchor_state.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("anchor_state", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["anchor_state"] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def ticks(store, n: int) -> float:
    """Seconds for ``n`` ticks (5 transactions each)."""
    t0 = time.perf_counter()
    for i in range(n):
        store.add_trigger("m", "manual", f"tick {i}")
        t = store.claim_trigger("m")
        store.finish_trigger(t.id, "done", "ok")
        store.put("controller.error.m", {"i": i})
        store.get("controller.error.m")
    return time.perf_counter() - t0


def contention(store, threads: int, each: int) -> tuple[int, int, float]:
    """(expected, counted, seconds) for ``threads`` x ``each`` concurrent increments of one row."""
    def work():
        for _ in range(each):
            store.record_failure("m", "race", "manual", "d", "e", now=0.0, base_s=1, cap_s=1)
    pool = [threading.Thread(target=work) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return threads * each, store.retry("m", "race").failures, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, default=300)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from loopml.loop.state import StateStore
    from loopml.platform.postgres import PostgresServer
    from loopml.store import sql as store_sql

    retries = {"n": 0}
    original_sleep = store_sql.time.sleep

    def counting_sleep(s: float) -> None:  # Store.run sleeps once per re-run: count them
        retries["n"] += 1
        original_sleep(s)

    with tempfile.TemporaryDirectory(prefix="loopml-store-bench-") as d:
        tmp = Path(d)
        anchor = load_anchor(tmp).StateStore(tmp / "anchor.db")
        ours_sqlite = StateStore(f"sqlite:///{tmp / 'state.db'}")
        pg = PostgresServer(tmp / "pg").start()
        try:
            ours_pg = StateStore(pg.create_database("bench"))
            for s in (anchor, ours_sqlite, ours_pg):
                ticks(s, 5)  # warm up: open, create tables, connect
            # interleaved rounds, the median round of each: a busy neighbour hurts all three alike
            names = ["anchor: sqlite3 (before #11)", "ours: store on SQLite", "ours: store on PostgreSQL"]
            stores = [anchor, ours_sqlite, ours_pg]
            per = max(1, args.ticks // args.rounds)
            times: list[list[float]] = [[], [], []]
            for r in range(args.rounds):
                for i in (list(range(3)) if r % 2 == 0 else [2, 1, 0]):
                    times[i].append(ticks(stores[i], per))
            rows = [(n, statistics.median(t) * args.rounds) for n, t in zip(names, times)]
            args.ticks = per * args.rounds
            store_sql.time.sleep = counting_sleep
            try:
                expected, counted, secs = contention(ours_pg, args.threads, 50)
            finally:
                store_sql.time.sleep = original_sleep
        finally:
            pg.remove()
    base = rows[0][1]
    print(f"state store, {args.ticks} controller ticks x 5 transactions (one run, this machine)")
    print(f"{'':34} {'ticks/s':>9} {'ms/tx':>7} {'time vs anchor':>15}")
    for name, secs_ in rows:
        print(f"{name:34} {args.ticks / secs_:9.1f} {1000 * secs_ / (5 * args.ticks):7.2f} {secs_ / base:14.2f}x")
    print(f"PostgreSQL contention: {args.threads} threads x 50 increments of one row: expected {expected}, "
          f"counted {counted} (lost updates: {expected - counted}), conflicts re-run: {retries['n']}, "
          f"{expected / secs:.0f} increments/s")


if __name__ == "__main__":
    main()
