"""metav1.Condition helpers (operator/conditions.py)."""

from __future__ import annotations

import pytest

from loopml.operator.conditions import condition, find, is_true, set_condition, set_many


def test_a_condition_replaces_its_type_and_keeps_its_transition_time_while_the_status_holds():
    first = condition("Ready", False, "Waiting", "0/2", generation=1, at="2026-01-01T00:00:00Z")
    conds = set_condition([condition("Progressing", True, "Step", at="2026-01-01T00:00:00Z")], first)
    same = set_condition(conds, condition("Ready", False, "Waiting", "1/2", generation=2, at="2026-01-02T00:00:00Z"))
    ready = find(same, "Ready")
    assert (ready["message"], ready["observedGeneration"], ready["lastTransitionTime"]) == \
        ("1/2", 2, "2026-01-01T00:00:00Z")
    flipped = set_condition(same, condition("Ready", True, "Available", "2/2", 2, at="2026-01-03T00:00:00Z"))
    assert find(flipped, "Ready")["lastTransitionTime"] == "2026-01-03T00:00:00Z" and is_true(flipped, "Ready")
    assert [c["type"] for c in flipped] == ["Progressing", "Ready"]  # one entry per type, order kept
    assert find(conds, "Ready")["message"] == "0/2", "the input list is not modified"


def test_set_many_and_validation():
    out = set_many(None, condition("A", True, "r"), condition("B", "Unknown", "r"), condition("A", False, "s"))
    assert [(c["type"], c["status"]) for c in out] == [("A", "False"), ("B", "Unknown")]
    assert out[0]["lastTransitionTime"].endswith("Z")
    with pytest.raises(ValueError):
        condition("A", "yes", "r")
