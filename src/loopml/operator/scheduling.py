"""Gang admission of TrainingJobs: a pure function of (nodes, running jobs, queue, quotas).

The operator calls ``admit()`` when Kueue is absent; it imports nothing from Kubernetes, so it
is tested and benchmarked (benchmarks/scheduler_bench.py) without an API server. The rules:

- **Gang**: all of a job's workers are placed at once or none is; no half-started job holds
  resources while it waits for the rest.
- **Order**: priority (higher first), then submission time, then name (the tie-break that
  makes the result a function of the inputs, whatever their order).
- **Quotas**: ``quotas[namespace]`` caps the sum of ``cpu``, ``memory`` and ``gpu``
  (workers x per-worker demand) of that namespace's running and admitted jobs; a missing
  namespace or key is unlimited.
- **Preemption**: a job that does not fit may preempt running jobs of strictly lower
  priority, only when that makes it fit (on the nodes and within its quota). Victims are
  taken lowest priority first, newest first among equals (they lose the least work), then
  every victim that turns out unnecessary is spared again. Their room counts as free in the
  same decision.
- **Placement**: best fit that keeps GPU nodes whole (``packing.place``): a gang on one node
  when one holds it, else on the fewest nodes; small GPU jobs fill partly used nodes first.
- **No starvation of big jobs**: the first job in order that fits the cluster but not its
  free room now becomes the *head*; room is reserved for it on the nodes that should drain
  first (fewest running jobs, then most free room: ``packing.reserve``) and later jobs only
  backfill what lies outside that reservation. Backfill never delays the head (nothing
  lands on its nodes while they drain) and still uses the rest of the cluster; the spec
  carries no run times, so a reservation rather than EASY backfill's start-time estimate
  (cost and gain measured in docs/benchmarks.md). Jobs that can never run (bigger than the cluster or
  than their quota) and jobs held by their own quota get no reservation: waiting for them
  would stop everyone else for nothing.

``Decision.reasons`` says why each waiting job waits (for its status condition).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from loopml.operator.packing import fits_total, minus, place, reserve

_KINDS = ("cpu", "memory", "gpu")


@dataclass(frozen=True)
class Node:
    name: str
    cpu: float
    memory: float
    gpu: int


@dataclass(frozen=True)
class Job:
    """Per-worker demand; ``name`` is a unique key (``namespace/name`` in the operator)."""

    name: str
    namespace: str
    workers: int
    cpu: float
    memory: float
    gpu: int
    priority: int = 0
    submitted: float = 0.0

    @property
    def demand(self) -> tuple[float, float, float]:
        return (float(self.cpu), float(self.memory), float(self.gpu))

    @property
    def total(self) -> tuple[float, float, float]:
        return tuple(self.workers * d for d in self.demand)


@dataclass(frozen=True)
class Placement:
    job: str
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Decision:
    admitted: tuple[Placement, ...]
    preempted: tuple[str, ...]
    waiting: tuple[str, ...]
    # Not part of equality: the contract's three fields are the decision, this is its prose.
    reasons: Mapping[str, str] = field(default_factory=dict, compare=False)


def _order(job: Job) -> tuple:
    return (-job.priority, job.submitted, job.name)


def _cap(quotas: Mapping[str, Mapping[str, float]], ns: str) -> list[float | None]:
    q = quotas.get(ns, {})
    return [q.get(k) for k in _KINDS]


def _over_quota(total: Sequence[float], used: Sequence[float], cap: Sequence[float | None]) -> str:
    """The first resource kind the job would push over its namespace's quota, or ''."""
    for kind, need, have, limit in zip(_KINDS, total, used, cap):
        if limit is not None and have + need > limit + 1e-9:
            return kind
    return ""


def _never(job: Job, allocatable: Mapping[str, list[float]], cap: Sequence[float | None]) -> str:
    """Why the job can never run on this cluster under this quota, or ''."""
    if job.workers < 1 or min(job.demand) < 0:
        return f"invalid demand: {job.workers} workers of cpu={job.cpu} memory={job.memory} gpu={job.gpu}"
    held = fits_total(job.demand, job.workers, allocatable)
    if held < job.workers:
        return (f"larger than the cluster: {job.workers} workers of cpu={job.cpu} memory={job.memory} "
                f"gpu={job.gpu}; the empty cluster holds {held} of them")
    kind = _over_quota(job.total, (0.0, 0.0, 0.0), cap)
    if kind:
        i = _KINDS.index(kind)
        return f"larger than the namespace quota: {kind} {job.total[i]:g} > {cap[i]:g}"
    return ""


class _State:
    """Free room per node and usage per namespace, updated as the decision is made."""

    def __init__(self, nodes: Sequence[Node], running: Sequence[tuple[Job, Placement]]):
        self.allocatable = {n.name: [float(n.cpu), float(n.memory), float(n.gpu)]
                            for n in sorted(nodes, key=lambda n: n.name)}
        self.free = {name: list(v) for name, v in self.allocatable.items()}
        self.used: dict[str, list[float]] = {}
        self.live: dict[str, tuple[Job, Placement]] = {}
        for job, placement in sorted(running, key=lambda r: r[0].name):
            self.take(job, placement.nodes)
            self.live[job.name] = (job, placement)

    def take(self, job: Job, nodes: Sequence[str], sign: float = 1.0) -> None:
        for node in nodes:
            if node in self.free:  # a node gone from the cluster frees nothing
                self.free[node] = [f - sign * d for f, d in zip(self.free[node], job.demand)]
        used = self.used.setdefault(job.namespace, [0.0, 0.0, 0.0])
        self.used[job.namespace] = [u + sign * t for u, t in zip(used, job.total)]

    def jobs_on(self) -> dict[str, int]:
        """Running jobs per node (a gang with several workers on a node counts once)."""
        count: dict[str, int] = {}
        for _, placement in self.live.values():
            for node in set(placement.nodes):
                count[node] = count.get(node, 0) + 1
        return count

    def usage(self, ns: str) -> list[float]:
        return self.used.get(ns, [0.0, 0.0, 0.0])


def _try(job: Job, state: _State, view: Mapping[str, list[float]], cap, victims: Sequence[Job]):
    """Placement of ``job`` if ``victims`` were stopped, or None."""
    used = list(state.usage(job.namespace))
    room = {n: list(v) for n, v in view.items()}
    for victim in victims:
        if victim.namespace == job.namespace:
            used = [u - t for u, t in zip(used, victim.total)]
        for node in state.live[victim.name][1].nodes:
            if node in room:
                room[node] = [r + d for r, d in zip(room[node], victim.demand)]
    if _over_quota(job.total, used, cap):
        return None
    return place(job.demand, job.workers, room)


def _victims(job: Job, state: _State, view, cap) -> tuple[list[Job], tuple[str, ...]] | None:
    """The fewest lower-priority running jobs whose stop lets ``job`` fit, with its placement."""
    pool = sorted((j for j, _ in state.live.values() if j.priority < job.priority),
                  key=lambda j: (j.priority, -j.submitted, j.name))
    if not pool or _try(job, state, view, cap, pool) is None:
        return None
    chosen: list[Job] = []
    for victim in pool:
        chosen.append(victim)
        if _try(job, state, view, cap, chosen) is not None:
            break
    # Spare, most valuable first, every victim the job can do without.
    for victim in reversed(list(chosen)):
        rest = [v for v in chosen if v is not victim]
        if _try(job, state, view, cap, rest) is not None:
            chosen = rest
    return chosen, _try(job, state, view, cap, chosen)


def admit(nodes: Sequence[Node], running: Sequence[tuple[Job, Placement]], queue: Sequence[Job],
          quotas: Mapping[str, Mapping[str, float]] = MappingProxyType({})) -> Decision:
    """Which queued jobs start now, on which nodes, and which running jobs stop for them.

    A queued job whose name is already running is ignored (the caller's view was stale).
    """
    state = _State(nodes, running)
    held: dict[str, list[float]] = {}
    head: Job | None = None
    admitted: list[Placement] = []
    preempted: list[str] = []
    waiting: list[str] = []
    reasons: dict[str, str] = {}
    for job in sorted(queue, key=_order):
        if job.name in state.live:
            continue
        cap = _cap(quotas, job.namespace)
        never = _never(job, state.allocatable, cap)
        if never:
            waiting.append(job.name)
            reasons[job.name] = never
            continue
        view = minus(state.free, held)
        placed = None
        if not _over_quota(job.total, state.usage(job.namespace), cap):
            placed = place(job.demand, job.workers, view)
        if placed is None:
            found = _victims(job, state, view, cap)
            if found is not None:
                victims, placed = found
                for victim in victims:
                    state.take(victim, state.live.pop(victim.name)[1].nodes, sign=-1.0)
                    preempted.append(victim.name)
        if placed is not None:
            state.take(job, placed)
            # Live from now on; never a victim later in this decision: jobs come in priority
            # order and only strictly lower priorities are preempted.
            state.live[job.name] = (job, Placement(job.name, placed))
            admitted.append(Placement(job.name, placed))
            continue
        waiting.append(job.name)
        kind = _over_quota(job.total, state.usage(job.namespace), cap)
        if kind:
            reasons[job.name] = f"namespace {job.namespace} quota: not enough {kind} left"
        elif head is None:
            head = job
            held = reserve(job.demand, job.workers, state.free, state.allocatable, state.jobs_on())
            reasons[job.name] = ("waiting for room; reserved for it: " + ", ".join(sorted(held)))
        else:
            reasons[job.name] = f"waiting for room outside what is reserved for {head.name}"
    return Decision(tuple(admitted), tuple(preempted), tuple(waiting), MappingProxyType(reasons))
