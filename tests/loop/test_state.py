"""loop/state.py on both back ends: one active rollout per model, guarded transitions,
debounced triggers, retries; concurrent writers on PostgreSQL lose nothing."""

import threading

import pytest

from loopml.loop.state import RolloutConflict, StaleRollout, StateStore
from tests.store.backends import state_uri  # noqa: F401 - fixture: SQLite and PostgreSQL


def test_one_active_rollout_per_model(state_uri):
    s = StateStore(state_uri)
    r = s.start_rollout("m", "2", "1")
    with pytest.raises(RolloutConflict) as info:
        s.start_rollout("m", "3", "1")
    assert info.value.http_status == 409 and "'m' already has an active rollout" in str(info.value)
    s.start_rollout("other", "5", "4")
    s.update_rollout(r, status="promoted")
    assert s.start_rollout("m", "3", "2").challenger == "3"


def test_update_checks_expected_status_and_keeps_decisions(state_uri):
    s = StateStore(state_uri)
    r = s.start_rollout("m", "2", "1")
    r = s.update_rollout(r, expect_status="running", decision={"action": "advance"}, step=1, baseline={"k": 1.0})
    assert r.step == 1 and r.baseline == {"k": 1.0} and r.decisions == [{"action": "advance"}]
    s.update_rollout(r, status="paused")
    with pytest.raises(StaleRollout):
        s.update_rollout(r, expect_status="running", step=2)
    assert s.rollout(r.id).step == 1


def test_triggers_debounce_queue_and_claim(state_uri):
    s = StateStore(state_uri)
    t1 = s.add_trigger("m", "drift", "psi", debounce_s=60)
    t2 = s.add_trigger("m", "drift", "psi again", debounce_s=60)
    t3 = s.add_trigger("m", "manual", "by hand")
    assert (t1.status, t2.status, t3.status) == ("queued", "merged", "merged")
    assert t2.result == f"merged into trigger {t1.id}"
    claimed = s.claim_trigger("m")
    assert claimed.id == t1.id and claimed.status == "running"
    # a crash leaves it running: the next claim takes it again rather than losing it
    assert s.claim_trigger("m").id == t1.id
    s.finish_trigger(t1.id, "done", "ok")
    assert s.claim_trigger("m") is None
    assert s.add_trigger("m", "manual", "later").status == "queued"
    assert [t.id for t in s.triggers("m")][-1] == t1.id  # newest first


def test_retries_back_off_and_are_taken_once(state_uri):
    s = StateStore(state_uri)
    first = s.record_failure("m", "drift:psi", "drift", "psi 0.3", "boom", now=100.0, base_s=10, cap_s=25)
    second = s.record_failure("m", "drift:psi", "drift", "psi 0.4", "boom again", now=100.0, base_s=10, cap_s=25)
    third = s.record_failure("m", "drift:psi", "drift", "psi 0.5", "boom", now=100.0, base_s=10, cap_s=25)
    assert (first.failures, second.failures, third.failures) == (1, 2, 3)
    assert (first.next_try, second.next_try, third.next_try) == (110.0, 120.0, 125.0)  # capped at 25 s
    assert third.detail == "psi 0.5" and third.waiting
    assert s.take_due_retries("m", now=124.0) == []
    due = s.take_due_retries("m", now=125.0)
    assert [d.cause for d in due] == ["drift:psi"] and s.take_due_retries("m", now=200.0) == []
    s.clear_retries("m")
    assert s.retries("m") == []


def test_small_values_round_trip(state_uri):
    s = StateStore(state_uri)
    assert s.get("k", "absent") == "absent"
    s.put("k", {"a": [1, 2]})
    s.put("k", {"a": [3]})
    assert StateStore(state_uri).get("k") == {"a": [3]}


def test_concurrent_writers_lose_no_update(state_uri):
    """Eight threads each count 15 failures of one cause (read-modify-write): on PostgreSQL the
    losers of each serialization conflict re-run, on SQLite BEGIN IMMEDIATE queues them."""
    s = StateStore(state_uri)
    s.put("warm", 1)  # open (and migrate) once before the race

    def work():
        for _ in range(15):
            s.record_failure("m", "c", "manual", "d", "e", now=0.0, base_s=1, cap_s=1)
            s.add_trigger("m", "manual", "race")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert s.retry("m", "c").failures == 120
    statuses = [t.status for t in s.triggers("m", limit=1000)]
    assert len(statuses) == 120 and statuses.count("queued") == 1  # exactly one queued, the rest merged
