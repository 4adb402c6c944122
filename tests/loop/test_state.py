import sqlite3

import pytest

from loopml.loop.state import StaleRollout, StateStore


def test_one_active_rollout_per_model(tmp_path):
    s = StateStore(tmp_path / "state.db")
    r = s.start_rollout("m", "2", "1")
    with pytest.raises(sqlite3.IntegrityError):
        s.start_rollout("m", "3", "1")
    s.start_rollout("other", "5", "4")
    s.update_rollout(r, status="promoted")
    assert s.start_rollout("m", "3", "2").challenger == "3"


def test_update_checks_expected_status_and_keeps_decisions(tmp_path):
    s = StateStore(tmp_path / "state.db")
    r = s.start_rollout("m", "2", "1")
    r = s.update_rollout(r, expect_status="running", decision={"action": "advance"}, step=1, baseline={"k": 1.0})
    assert r.step == 1 and r.baseline == {"k": 1.0} and r.decisions == [{"action": "advance"}]
    s.update_rollout(r, status="paused")
    with pytest.raises(StaleRollout):
        s.update_rollout(r, expect_status="running", step=2)
    assert s.rollout(r.id).step == 1


def test_triggers_debounce_queue_and_claim(tmp_path):
    s = StateStore(tmp_path / "state.db")
    t1 = s.add_trigger("m", "drift", "psi", debounce_s=60)
    t2 = s.add_trigger("m", "drift", "psi again", debounce_s=60)
    t3 = s.add_trigger("m", "manual", "by hand")
    assert (t1.status, t2.status, t3.status) == ("queued", "merged", "merged")
    claimed = s.claim_trigger("m")
    assert claimed.id == t1.id and claimed.status == "running"
    # a crash leaves it running: the next claim takes it again rather than losing it
    assert s.claim_trigger("m").id == t1.id
    s.finish_trigger(t1.id, "done", "ok")
    assert s.claim_trigger("m") is None
    assert s.add_trigger("m", "manual", "later").status == "queued"
