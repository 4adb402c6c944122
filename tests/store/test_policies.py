"""serve/policy_store.py on a PostgreSQL state store: traffic policies in a table, replicas on
different machines (different local folders) apply the same policy by its version number."""

from __future__ import annotations

from sqlalchemy import update

from loopml.serve.policy_store import PolicyFiles
from loopml.serve.traffic import TrafficPolicy
from loopml.store import open_store
from loopml.store.schema import policies


def test_replicas_on_two_machines_apply_the_same_policy(tmp_path, pg_url):
    a = PolicyFiles(tmp_path / "machine-a", pg_url)
    b = PolicyFiles(tmp_path / "machine-b", pg_url)
    assert b.changed(["m", "n"]) == {}
    a.save("m", TrafficPolicy(kind="canary", weight=0.3))
    assert a.changed(["m"]) == {}  # the writer applied it itself
    seen = b.changed(["m", "n"])
    assert list(seen) == ["m"] and seen["m"].kind == "canary" and seen["m"].weight == 0.3
    assert b.changed(["m"]) == {}  # same version: nothing to do
    b.save("m", TrafficPolicy(kind="shadow"))
    assert a.changed(["m"])["m"].kind == "shadow"
    assert not list(tmp_path.rglob("traffic-*.json"))  # no file on either machine


def test_a_restarted_replica_applies_the_last_policy_and_versions_grow(tmp_path, pg_url):
    writer = PolicyFiles(tmp_path / "a", pg_url)
    for w in (0.1, 0.2, 0.5):
        writer.save("m", TrafficPolicy(kind="canary", weight=w))
    rows = open_store(pg_url).run(lambda con: con.execute(policies.select()).mappings().all())
    assert [(r["model"], r["version"]) for r in rows] == [("m", 3)]
    fresh = PolicyFiles(tmp_path / "b", pg_url)  # first look: whatever is stored
    assert fresh.changed(["m"])["m"].weight == 0.5


def test_a_broken_stored_policy_is_ignored_and_the_current_one_stays(tmp_path, pg_url):
    a, b = PolicyFiles(tmp_path / "a", pg_url), PolicyFiles(tmp_path / "b", pg_url)
    a.save("m", TrafficPolicy(kind="canary", weight=0.3))
    assert b.changed(["m"])["m"].weight == 0.3
    open_store(pg_url).run(lambda con: con.execute(
        update(policies).values(policy='{"kind": "canary", "weight": 7}', version=policies.c.version + 1)))
    assert b.changed(["m"]) == {}  # logged and skipped, not applied, not raised
    a.save("m", TrafficPolicy(kind="single"))
    assert b.changed(["m"])["m"].kind == "single"


def test_on_sqlite_the_policy_stays_a_file(tmp_path):
    a = PolicyFiles(tmp_path, f"sqlite:///{tmp_path / 'state.db'}")
    a.save("m", TrafficPolicy(kind="canary", weight=0.3))
    assert (tmp_path / "run" / "traffic-m.json").exists()
    assert PolicyFiles(tmp_path).changed(["m"])["m"].weight == 0.3
