"""Gang admission at scale, simulated: loopml's ``admit()`` vs FIFO pod-by-pod placement.

    python benchmarks/scheduler_bench.py [--jobs 1000] [--seed 0] [--load 0.95]

The admission decision is a pure function (loopml.operator.scheduling), so the cluster is
simulated: 8 nodes x 8 GPUs (96 CPUs, 768 GiB each) and ``--jobs`` training jobs arriving as a
Poisson stream, sized so that the GPU-hours offered are ``--load`` times what the cluster
holds over the arrival span. A job is 1 worker of 1, 2, 4 or 8 GPUs, or (12%) a multi-node
gang of 2-4 workers of 4 or 8 GPUs; 8 CPUs and 64 GiB per GPU; run time log-normal
(median 30 min, capped at 8 h); 10% of jobs have priority 1. Seeded: same seed, same jobs.

The clock is simulated and event-driven (arrivals, completions; no sleeps). At every event
time the scheduler runs once over the whole queue:

- **ours**: ``admit(nodes, running, queue)``; admitted gangs start, preempted jobs go back to
  the queue and restart from scratch (their GPU-hours so far are counted as lost).
- **anchor, FIFO without gang admission**: what the default kube-scheduler does with the pods
  of an indexed Job when no gang scheduler is installed: pods in submission order, each one
  alone on the node with the most free GPUs that holds it (LeastAllocated scoring), later
  pods placed when earlier ones do not fit; a job runs once all its pods are placed, and
  until then its placed pods hold their GPUs idle. No priorities, no preemption.

Printed side by side (one run, same jobs):
- GPU allocation: the share of the cluster's GPU-hours allocated while some job waits, and
  the share doing useful work (held by a job whose every worker runs: the same for ours);
- submission -> admission (first start), simulated hours, median and p99;
- concurrently running jobs, max and time-weighted mean over the makespan;
- scheduling latency: wall-clock time of one scheduler pass (one ``admit()`` call), median,
  p99 and max, with the queue length it saw (machine-dependent: read the ratio);
- makespan, preemptions and jobs never started (a pod-by-pod deadlock leaves some);
- the worst case of one pass: the whole workload queued at once.

A third column runs ours with the head's reservation switched off (an ablation, patched in
here only): the price of the guarantee that big gangs are not starved.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from loopml.operator import scheduling  # noqa: E402
from loopml.operator.scheduling import Job, Node, Placement, admit  # noqa: E402

NODES = [Node(f"gpu-{i}", cpu=96.0, memory=768.0, gpu=8) for i in range(8)]
GPUS = sum(n.gpu for n in NODES)
HOUR = 3600.0  # the clock counts seconds, as the operator's timestamps do


def workload(count: int, seed: int, load: float) -> tuple[list[Job], dict[str, float]]:
    """Jobs (``submitted`` in seconds) and their run times in seconds."""
    rng = random.Random(seed)
    shapes, durations = [], []
    for _ in range(count):
        if rng.random() < 0.12:
            workers, gpu = rng.choice([2, 2, 3, 4]), rng.choice([4, 8])
        else:
            workers, gpu = 1, rng.choices([1, 2, 4, 8], weights=[45, 25, 18, 12])[0]
        shapes.append((workers, gpu, 1 if rng.random() < 0.10 else 0, rng.choice("abcd")))
        durations.append(HOUR * min(8.0, 0.5 * math.exp(rng.gauss(0.0, 1.0))))
    offered = sum(w * g * d for (w, g, _, _), d in zip(shapes, durations))
    span = offered / (GPUS * load)
    t, jobs, run = 0.0, [], {}
    for i, ((workers, gpu, prio, team), dur) in enumerate(zip(shapes, durations)):
        t += rng.expovariate(count / span)
        name = f"team-{team}/job-{i:04d}"
        jobs.append(Job(name, f"team-{team}", workers, cpu=8.0 * gpu, memory=64.0 * gpu, gpu=gpu,
                        priority=prio, submitted=t))
        run[name] = dur
    return jobs, run


@dataclass
class Stats:
    """Integrals over the simulated time (seconds), and per-job and per-pass samples."""

    waiting_seconds: float = 0.0
    allocated_while_waiting: float = 0.0
    useful_while_waiting: float = 0.0
    concurrency_area: float = 0.0
    max_concurrent: int = 0
    makespan: float = 0.0
    preemptions: int = 0
    lost_gpu_seconds: float = 0.0
    waits: list[float] = field(default_factory=list)
    pass_seconds: list[float] = field(default_factory=list)
    queue_seen: list[int] = field(default_factory=list)
    never_started: int = 0
    big_waits: list[float] = field(default_factory=list)

    def record_waits(self, jobs: list[Job], first_start: dict[str, float]) -> None:
        self.never_started = len(jobs) - len(first_start)
        self.waits = [first_start[j.name] - j.submitted for j in jobs if j.name in first_start]
        self.big_waits = [first_start[j.name] - j.submitted for j in jobs
                          if j.name in first_start and gpus(j) >= 16]

    def advance(self, dt: float, waiting: bool, allocated: float, useful: float, running: int) -> None:
        if waiting:
            self.waiting_seconds += dt
            self.allocated_while_waiting += allocated * dt
            self.useful_while_waiting += useful * dt
        self.concurrency_area += running * dt
        self.max_concurrent = max(self.max_concurrent, running)


def gpus(job: Job) -> int:
    return job.workers * job.gpu


def simulate_ours(jobs: list[Job], run: dict[str, float]) -> Stats:
    stats = Stats()
    # (time, kind 0=arrival 1=end, name, run): a preempted run's end event is stale
    events = [(j.submitted, 0, j.name, 0) for j in jobs]
    heapq.heapify(events)
    by_name = {j.name: j for j in jobs}
    queue: dict[str, Job] = {}
    running: dict[str, tuple[Placement, float, int]] = {}  # name -> (placement, start, run)
    runs = 0
    first_start: dict[str, float] = {}
    now = 0.0
    while events:
        t = events[0][0]
        alloc = sum(gpus(by_name[n]) for n in running)
        stats.advance(t - now, bool(queue), alloc, alloc, len(running))
        now = t
        while events and events[0][0] == t:
            _, kind, name, run_id = heapq.heappop(events)
            if kind == 0:
                queue[name] = by_name[name]
            elif name in running and running[name][2] == run_id:
                del running[name]
                stats.makespan = t
        started = time.perf_counter()
        decision = admit(NODES, [(by_name[n], r[0]) for n, r in running.items()], list(queue.values()))
        stats.pass_seconds.append(time.perf_counter() - started)
        stats.queue_seen.append(len(queue))
        for name in decision.preempted:
            start = running.pop(name)[1]
            stats.preemptions += 1
            stats.lost_gpu_seconds += (t - start) * gpus(by_name[name])
            queue[name] = by_name[name]
        for placement in decision.admitted:
            name = placement.job
            del queue[name]
            runs += 1
            running[name] = (placement, t, runs)
            first_start.setdefault(name, t)
            heapq.heappush(events, (t + run[name], 1, name, runs))
    stats.record_waits(jobs, first_start)
    return stats


def fifo_pass(pending: dict[str, list[str]], free: dict[str, list[float]], by_name: dict[str, Job]) -> list[str]:
    """One kube-scheduler-like pass: pods in submission order, each alone; the jobs now whole."""
    done = []
    for name, placed in pending.items():  # dicts keep insertion (= submission) order
        job = by_name[name]
        while len(placed) < job.workers:
            fits = [n for n, f in free.items() if all(x + 1e-9 >= d for x, d in zip(f, job.demand))]
            if not fits:
                break
            node = max(fits, key=lambda n: (free[n][2], free[n][0], n))  # LeastAllocated
            free[node] = [f - d for f, d in zip(free[node], job.demand)]
            placed.append(node)
        if len(placed) == job.workers:
            done.append(name)
    return done


def one_big_pass(jobs: list[Job]) -> tuple[int, float, float]:
    """Worst case: every job of the workload queued at once on a cluster about half busy.

    Returns (queue length, ours in ms, FIFO pass in ms), each the median of 5 passes.
    """
    by_name = {j.name: j for j in jobs}
    first = admit(NODES, [], jobs[:12])
    running = [(by_name[p.job], p) for p in first.admitted]
    started_names = {p.job for p in first.admitted}
    queue = [j for j in jobs if j.name not in started_names]
    ours, fifo = [], []
    for _ in range(5):
        t = time.perf_counter()
        admit(NODES, running, queue)
        ours.append(time.perf_counter() - t)
        free = {n.name: [n.cpu, n.memory, float(n.gpu)] for n in NODES}
        for job, placement in running:
            for node in placement.nodes:
                free[node] = [f - d for f, d in zip(free[node], job.demand)]
        pending: dict[str, list[str]] = {j.name: [] for j in queue}
        t = time.perf_counter()
        fifo_pass(pending, free, by_name)
        fifo.append(time.perf_counter() - t)
    return len(queue), statistics.median(ours) * 1000, statistics.median(fifo) * 1000


def simulate_fifo_pods(jobs: list[Job], run: dict[str, float]) -> Stats:
    stats = Stats()
    events = [(j.submitted, 0, j.name) for j in jobs]
    heapq.heapify(events)
    by_name = {j.name: j for j in jobs}
    free = {n.name: [n.cpu, n.memory, float(n.gpu)] for n in NODES}
    pending: dict[str, list[str]] = {}  # name -> nodes of its placed pods, in submission order
    running: set[str] = set()
    job_nodes: dict[str, list[str]] = {}
    first_start: dict[str, float] = {}
    now = 0.0
    while events:
        t = events[0][0]
        held = sum(len(p) * by_name[n].gpu for n, p in pending.items())
        useful = sum(gpus(by_name[n]) for n in running)
        stats.advance(t - now, bool(pending), held + useful, useful, len(running))
        now = t
        while events and events[0][0] == t:
            _, kind, name = heapq.heappop(events)
            job = by_name[name]
            if kind == 0:
                pending[name] = []
                continue
            running.discard(name)
            stats.makespan = t
            for node in job_nodes.pop(name):
                free[node] = [f + d for f, d in zip(free[node], job.demand)]
        started = time.perf_counter()
        done = fifo_pass(pending, free, by_name)
        stats.pass_seconds.append(time.perf_counter() - started)
        stats.queue_seen.append(len(pending))
        for name in done:
            job_nodes[name] = pending.pop(name)
            running.add(name)
            first_start[name] = t
            heapq.heappush(events, (t + run[name], 1, name))
    stats.record_waits(jobs, first_start)
    return stats


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def rows(s: Stats) -> dict[str, str]:
    share = s.allocated_while_waiting / (GPUS * s.waiting_seconds) if s.waiting_seconds else float("nan")
    useful = s.useful_while_waiting / (GPUS * s.waiting_seconds) if s.waiting_seconds else float("nan")
    ms = [x * 1000 for x in s.pass_seconds]
    return {
        "GPU allocation while jobs wait": f"{share:.1%}",
        "  of which doing useful work": f"{useful:.1%}",
        "hours with a job waiting": f"{s.waiting_seconds / HOUR:.1f}",
        "submission -> admission median (h)": f"{pct(s.waits, 0.5) / HOUR:.2f}",
        "submission -> admission p99 (h)": f"{pct(s.waits, 0.99) / HOUR:.2f}",
        "submission -> admission max (h)": f"{max(s.waits) / HOUR:.2f}",
        "  median of 16+ GPU gangs (h)": f"{pct(s.big_waits, 0.5) / HOUR:.2f}",
        "concurrent jobs max": f"{s.max_concurrent}",
        "concurrent jobs mean": f"{s.concurrency_area / s.makespan:.1f}" if s.makespan else "nan",
        "scheduling pass median (ms)": f"{pct(ms, 0.5):.2f}",
        "scheduling pass p99 (ms)": f"{pct(ms, 0.99):.2f}",
        "scheduling pass max (ms)": f"{max(ms):.2f}",
        "queue length seen, median / max": f"{pct(s.queue_seen, 0.5):.0f} / {max(s.queue_seen)}",
        "makespan (h)": f"{s.makespan / HOUR:.1f}",
        "preemptions (GPU-hours lost)": f"{s.preemptions} ({s.lost_gpu_seconds / HOUR:.1f})",
        "jobs never started": f"{s.never_started}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--load", type=float, default=0.95, help="GPU-hours offered / held over the arrival span")
    args = parser.parse_args()
    jobs, run = workload(args.jobs, args.seed, args.load)
    multi = sum(j.workers > 1 for j in jobs)
    print(f"{len(jobs)} jobs (seed {args.seed}, load {args.load}), {multi} multi-worker gangs, "
          f"{sum(gpus(j) * run[j.name] for j in jobs) / HOUR:.0f} GPU-hours over {jobs[-1].submitted / HOUR:.1f} h "
          f"of arrivals; cluster {len(NODES)} nodes x 8 = {GPUS} GPUs; "
          f"mean GPUs per job {statistics.mean(gpus(j) for j in jobs):.2f}")
    ours = rows(simulate_ours(jobs, run))
    anchor = rows(simulate_fifo_pods(jobs, run))
    # Ablation: the same admit() with the head's reservation switched off, to show what the
    # guarantee against starving big gangs costs in allocation and what it buys in waits.
    with mock.patch.object(scheduling, "reserve", lambda *a, **k: {}):
        greedy = rows(simulate_ours(jobs, run))
    width = max(map(len, ours))
    print(f"\n{'':{width}}  {'ours (gang admit)':>18}  {'FIFO pods, no gang':>18}  {'ours w/o reservation':>20}")
    for key in ours:
        print(f"{key:{width}}  {ours[key]:>18}  {anchor[key]:>18}  {greedy[key]:>20}")
    queued, ours_ms, fifo_ms = one_big_pass(jobs)
    print(f"\none pass with all {queued} other jobs queued at once (cluster half busy): "
          f"ours {ours_ms:.1f} ms, FIFO pods {fifo_ms:.1f} ms (ratio {ours_ms / fifo_ms:.1f}x)")


if __name__ == "__main__":
    main()
