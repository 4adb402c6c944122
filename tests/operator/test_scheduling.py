"""Gang admission (loopml.operator.scheduling): rules by example, then properties (hypothesis)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from loopml.operator.scheduling import Decision, Job, Node, Placement, admit


def gpu_nodes(n: int, gpu: int = 8) -> list[Node]:
    return [Node(f"n{i}", cpu=64, memory=512, gpu=gpu) for i in range(n)]


def job(name: str, gpu: int = 1, workers: int = 1, *, ns: str = "team", priority: int = 0,
        submitted: float = 0.0, cpu: float | None = None) -> Job:
    return Job(name, ns, workers, cpu=4 * max(gpu, 1) if cpu is None else cpu, memory=16 * max(gpu, 1),
               gpu=gpu, priority=priority, submitted=submitted)


def running(*pairs: tuple[Job, tuple[str, ...]]) -> list[tuple[Job, Placement]]:
    return [(j, Placement(j.name, nodes)) for j, nodes in pairs]


def placed(decision: Decision) -> dict[str, tuple[str, ...]]:
    return {p.job: p.nodes for p in decision.admitted}


# -- rules by example ------------------------------------------------------------------------


def test_a_gang_that_does_not_fit_whole_takes_nothing():
    # Room for one 8-GPU worker (n1 is half used); the 2-worker gang must not start half.
    d = admit(gpu_nodes(2), running((job("r", gpu=4), ("n1",))), [job("g", gpu=8, workers=2)])
    assert d.admitted == () and d.waiting == ("g",)
    assert "reserved" in d.reasons["g"]


def test_a_gang_that_fits_on_one_node_stays_on_one_node():
    d = admit(gpu_nodes(2), [], [job("g", gpu=2, workers=4)])
    assert len(set(placed(d)["g"])) == 1 and len(placed(d)["g"]) == 4


def test_a_gang_bigger_than_a_node_spans_the_fewest_nodes():
    d = admit(gpu_nodes(4), running((job("r", gpu=4), ("n0",))), [job("g", gpu=4, workers=4)])
    nodes = placed(d)["g"]
    assert len(nodes) == 4 and len(set(nodes)) == 2 and "n0" not in nodes


def test_best_fit_keeps_empty_gpu_nodes_whole():
    # n1 has one GPU spare: the 1-GPU job goes there, n0 stays whole for an 8-GPU job.
    d = admit(gpu_nodes(2), running((job("r", gpu=7), ("n1",))),
              [job("small", gpu=1, submitted=0), job("big", gpu=8, submitted=1)])
    assert placed(d) == {"small": ("n1",), "big": ("n0",)}


def test_cpu_only_jobs_avoid_nodes_with_idle_gpus():
    nodes = gpu_nodes(1) + [Node("cpu0", cpu=32, memory=128, gpu=0)]
    d = admit(nodes, [], [job("etl", gpu=0, cpu=8)])
    assert placed(d) == {"etl": ("cpu0",)}


def test_priority_then_submission_order():
    q = [job("late", gpu=8, submitted=2), job("early", gpu=8, submitted=1),
         job("urgent", gpu=8, submitted=3, priority=5)]
    d = admit(gpu_nodes(1), [], q)
    assert placed(d) == {"urgent": ("n0",)}
    assert d.waiting == ("early", "late")
    d = admit(gpu_nodes(2), [], q)
    assert set(placed(d)) == {"urgent", "early"}


def test_namespace_quota_holds_back_only_that_namespace():
    quotas = {"a": {"gpu": 8}}
    q = [job("a1", gpu=6, ns="a", submitted=0), job("a2", gpu=4, ns="a", submitted=1),
         job("b1", gpu=4, ns="b", submitted=2)]
    d = admit(gpu_nodes(2), [], q, quotas)
    assert set(placed(d)) == {"a1", "b1"}
    assert d.waiting == ("a2",) and "quota" in d.reasons["a2"]


def test_a_job_larger_than_its_quota_or_the_cluster_waits_says_why_and_blocks_nobody():
    q = [job("huge", gpu=8, workers=3, submitted=0), job("greedy", gpu=8, ns="a", submitted=1),
         job("ok", gpu=8, submitted=2)]
    d = admit(gpu_nodes(2), [], q, {"a": {"gpu": 4}})
    assert placed(d) == {"ok": ("n0",)}
    assert "larger than the cluster" in d.reasons["huge"]
    assert "larger than the namespace quota" in d.reasons["greedy"]


def test_preemption_takes_the_lowest_priority_newest_victim_and_only_what_is_needed():
    r = running((job("old", gpu=4, submitted=0), ("n0",)), (job("new", gpu=4, submitted=5), ("n0",)),
                (job("mid", gpu=8, priority=1), ("n1",)))
    d = admit(gpu_nodes(2), r, [job("vip", gpu=4, priority=2, submitted=9)])
    assert d.preempted == ("new",) and placed(d) == {"vip": ("n0",)}


def test_no_preemption_of_equal_priority_nor_when_it_would_not_make_room():
    r = running((job("peer", gpu=8, priority=3), ("n0",)), (job("low", gpu=4), ("n1",)),
                (job("high", gpu=4, priority=9), ("n1",)))
    d = admit(gpu_nodes(2), r, [job("want", gpu=8, priority=3)])
    # Stopping "low" leaves 4 GPUs: not enough, so it keeps running.
    assert d.preempted == () and d.waiting == ("want",)


def test_preemption_frees_quota_in_the_same_namespace():
    r = running((job("batch", gpu=4, ns="a"), ("n0",)))
    d = admit(gpu_nodes(2), r, [job("prod", gpu=4, ns="a", priority=1)], {"a": {"gpu": 4}})
    assert d.preempted == ("batch",) and "prod" in placed(d)


def test_backfill_stays_off_the_nodes_reserved_for_the_head():
    # big needs a whole node; n1 has the most room (6) and is reserved for it.
    r = running((job("r0", gpu=6), ("n0",)), (job("r1", gpu=2), ("n1",)))
    q = [job("big", gpu=8, submitted=0), job("s1", gpu=1, submitted=1), job("s2", gpu=2, submitted=2)]
    d = admit(gpu_nodes(2), r, q)
    assert placed(d) == {"s1": ("n0",)}
    assert d.waiting == ("big", "s2") and "big" in d.reasons["s2"]


def test_a_stale_view_neither_doubles_a_running_job_nor_loses_a_vanished_nodes_quota():
    # "r" is running and still listed in the queue; "gone" runs on a node no longer listed.
    r = running((job("r", gpu=4, ns="a"), ("n0",)), (job("gone", gpu=4, ns="a"), ("old-node",)))
    q = [job("r", gpu=4, ns="a"), job("next", gpu=4, ns="a", submitted=1)]
    d = admit(gpu_nodes(1), r, q, {"a": {"gpu": 8}})
    assert d.admitted == () and d.waiting == ("next",) and "quota" in d.reasons["next"]


def test_the_head_reserves_the_node_that_drains_first_not_the_one_with_most_room():
    # n0: one job on 4 GPUs; n1: three jobs on 3 GPUs (more room, but three jobs to wait for).
    r = running((job("a", gpu=4), ("n0",)), *[(job(f"b{i}", gpu=1), ("n1",)) for i in range(3)])
    d = admit(gpu_nodes(2), r, [job("big", gpu=8, submitted=0), job("small", gpu=2, submitted=1)])
    assert d.reasons["big"].endswith("n0")
    assert placed(d) == {"small": ("n1",)}


def first_start_of_big_job(rounds: int) -> int | None:
    """Two full nodes and a stream of 1-GPU jobs (one ends, four arrive per round): the round
    in which an 8-GPU job queued ahead of the stream starts, or None."""
    nodes = gpu_nodes(2)
    fill = [job(f"f{i}", gpu=1, submitted=i) for i in range(16)]
    live = [(j, p) for j, p in zip(fill, admit(nodes, [], fill).admitted)]
    big = job("big", gpu=8, submitted=100)
    for step in range(rounds):
        live.pop(0)  # the oldest job ends
        queue = [big] + [job(f"s{step}-{i}", gpu=1, submitted=101 + step) for i in range(4)]
        d = admit(nodes, live, queue)
        by_name = {j.name: j for j in queue}
        live += [(by_name[p.job], p) for p in d.admitted]
        if "big" in placed(d):
            return step
    return None


def test_a_big_job_is_not_starved_by_a_stream_of_small_ones():
    # Without the head's reservation every GPU freed is refilled by a small job at once and
    # no node ever empties; with it, the reserved node drains.
    step = first_start_of_big_job(100)
    assert step is not None and step > 0


def test_the_decision_is_a_function_of_the_inputs_not_their_order():
    r = running((job("a", gpu=3), ("n0",)), (job("b", gpu=5, submitted=1), ("n1",)))
    q = [job(f"q{i}", gpu=g, submitted=i % 3, priority=i % 2) for i, g in enumerate([1, 2, 4, 8, 1, 2])]
    first = admit(gpu_nodes(3), r, q)
    rng = random.Random(7)
    for _ in range(5):
        nodes, rr, qq = gpu_nodes(3), list(r), list(q)
        rng.shuffle(nodes), rng.shuffle(rr), rng.shuffle(qq)
        assert admit(nodes, rr, qq) == first


# -- properties ------------------------------------------------------------------------------

NAMESPACES = ("a", "b", "c")


@st.composite
def jobs(draw, prefix: str, max_jobs: int):
    out = []
    for i in range(draw(st.integers(0, max_jobs))):
        gpu = draw(st.sampled_from([0, 1, 2, 4, 8]))
        out.append(Job(f"{prefix}{i}", draw(st.sampled_from(NAMESPACES)), draw(st.integers(1, 4)),
                       cpu=draw(st.sampled_from([0.5, 1.0, 4.0, 16.0])),
                       memory=draw(st.sampled_from([1.0, 8.0, 64.0])), gpu=gpu,
                       priority=draw(st.integers(0, 3)), submitted=float(draw(st.integers(0, 20)))))
    return out


@st.composite
def scenarios(draw):
    nodes = [Node(f"n{i}", cpu=draw(st.sampled_from([8.0, 32.0, 64.0])),
                  memory=draw(st.sampled_from([32.0, 256.0])), gpu=draw(st.sampled_from([0, 4, 8])))
             for i in range(draw(st.integers(1, 5)))]
    quotas = {ns: {k: float(draw(st.integers(4, 64))) for k in draw(st.sets(st.sampled_from(["cpu", "gpu"])))}
              for ns in draw(st.sets(st.sampled_from(NAMESPACES)))}
    # Running jobs come from an earlier decision on the empty cluster, so they are valid.
    earlier = draw(jobs("r", 8))
    first = admit(nodes, [], earlier, quotas)
    by_name = {j.name: j for j in earlier}
    run = [(by_name[p.job], p) for p in first.admitted]
    return nodes, run, draw(jobs("q", 10)), quotas


def usage_after(nodes, run, queue, d: Decision):
    jobs_by_name = {j.name: j for j, _ in run} | {j.name: j for j in queue}
    live = [(j, p) for j, p in run if j.name not in d.preempted]
    live += [(jobs_by_name[p.job], p) for p in d.admitted]
    per_node = {n.name: [0.0, 0.0, 0.0] for n in nodes}
    per_ns: dict[str, list[float]] = {}
    for j, p in live:
        for node in p.nodes:
            per_node[node] = [u + x for u, x in zip(per_node[node], j.demand)]
        per_ns[j.namespace] = [u + x for u, x in zip(per_ns.get(j.namespace, [0.0] * 3), j.total)]
    return per_node, per_ns


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_properties_of_every_decision(scenario):
    nodes, run, queue, quotas = scenario
    d = admit(nodes, run, queue, quotas)
    by_name = {j.name: j for j in queue} | {j.name: j for j, _ in run}

    # All or nothing: an admitted job has one node per worker; every queued job is decided once.
    assert all(len(p.nodes) == by_name[p.job].workers for p in d.admitted)
    decided = [p.job for p in d.admitted] + list(d.waiting)
    assert sorted(decided) == sorted(j.name for j in queue)
    assert set(d.reasons) == set(d.waiting)

    # Never over-allocates a node; never exceeds a quota.
    per_node, per_ns = usage_after(nodes, run, queue, d)
    for n in nodes:
        assert all(u <= cap + 1e-9 for u, cap in zip(per_node[n.name], (n.cpu, n.memory, n.gpu)))
    for ns, caps in quotas.items():
        for i, kind in enumerate(("cpu", "memory", "gpu")):
            if kind in caps:
                assert per_ns.get(ns, [0.0] * 3)[i] <= caps[kind] + 1e-9

    # A preempted job was running and has lower priority than a job admitted with it.
    running_names = {j.name for j, _ in run}
    assert set(d.preempted) <= running_names
    if d.preempted:
        top = max(by_name[p.job].priority for p in d.admitted)
        assert all(by_name[v].priority < top for v in d.preempted)

    # The head (the job room is reserved for) really does not fit in what is left free.
    for name, reason in d.reasons.items():
        if "reserved for it" in reason:
            j = by_name[name]
            left = {n.name: [c - u for c, u in zip((n.cpu, n.memory, n.gpu), per_node[n.name])] for n in nodes}
            room = sum(min([int((f[i] + 1e-9) // x) for i, x in enumerate(j.demand) if x > 0] or [99])
                       for f in left.values())
            assert room < j.workers

    # A job the empty cluster cannot hold waits and says so.
    for j in queue:
        room = sum(min(int(n.cpu // j.cpu), int(n.memory // j.memory), int(n.gpu // j.gpu) if j.gpu else 99)
                   for n in nodes)
        if room < j.workers:
            assert j.name in d.waiting and "larger than the cluster" in d.reasons[j.name]

    # Deterministic, whatever the order of the inputs (the reasons too).
    again = admit(list(reversed(nodes)), list(reversed(run)), list(reversed(queue)), quotas)
    assert again == d and dict(again.reasons) == dict(d.reasons)
