"""What gang admission reads from the cluster (operator/demand.py)."""

from __future__ import annotations

from loopml.operator.demand import child_phase, demand, namespace_quotas, node_capacity


def test_quantities_become_numbers_per_worker():
    job = demand({"metadata": {"name": "a", "namespace": "ml", "creationTimestamp": "2026-01-01T00:00:10Z"},
                  "spec": {"workers": 3, "priority": 5, "resources": {"cpu": "500m", "memory": "2Gi", "gpu": 1}}})
    assert (job.name, job.workers, job.cpu, job.memory, job.gpu, job.priority) == ("ml/a", 3, 0.5, 2 * 2**30, 1, 5)
    assert job.submitted == 1767225610.0


def test_nodes_and_quotas():
    assert node_capacity({"metadata": {"name": "n"}, "spec": {"unschedulable": True}}) is None
    n = node_capacity({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "7500m", "memory": "1Gi"}}})
    assert (n.cpu, n.memory, n.gpu) == (7.5, 2**30, 0)
    quotas = namespace_quotas([
        {"metadata": {"namespace": "a"}, "spec": {"hard": {"requests.cpu": "10", "requests.nvidia.com/gpu": "4"}}},
        {"metadata": {"namespace": "a"}, "spec": {"hard": {"cpu": "8", "pods": "10"}}},
        {"metadata": {"namespace": "b"}, "spec": {"hard": {"pods": "3"}}}])
    assert quotas == {"a": {"cpu": 8.0, "gpu": 4.0}}  # the tightest; b limits nothing admission counts


def test_child_phase_from_jobs_and_rayjobs():
    assert child_phase({"kind": "Job", "spec": {"suspend": True}, "status": {"active": 0}}) is None
    assert child_phase({"kind": "Job", "spec": {"suspend": False}, "status": {"active": 2}}) == "Running"
    assert child_phase({"kind": "Job", "status": {"conditions": [{"type": "Complete", "status": "True"}]}}) == "Succeeded"
    assert child_phase({"kind": "Job", "status": {"conditions": [{"type": "Failed", "status": "True"}]}}) == "Failed"
    assert child_phase({"kind": "RayJob", "status": {"jobStatus": "SUCCEEDED"}}) == "Succeeded"
    assert child_phase({"kind": "RayJob", "status": {"jobStatus": "PENDING"}}) is None
