import os

from loopml.registry import audit


def test_the_audit_log_is_private(tmp_path):
    old = os.umask(0o022)
    try:
        audit.record_event(tmp_path / "audit.jsonl", "m", "trigger", "why")
    finally:
        os.umask(old)
    assert (tmp_path / "audit.jsonl").stat().st_mode & 0o777 == 0o600


# -- the record of truth is the state store's table (issue #11), on both back ends ---------
from loopml.config import Workspace  # noqa: E402
from tests.store.backends import state_uri  # noqa: E402,F401 - fixture: SQLite and PostgreSQL


def _ws(tmp_path, name, uri):
    return Workspace(tmp_path / name, state_uri_override=uri)


def test_records_go_to_the_table_and_the_export(tmp_path, state_uri):
    ws = _ws(tmp_path, "a", state_uri)
    audit.record_event(ws, "m", "rollout-advance", "canary ok", version="2", previous="1", evidence={"p99": 3.5})
    audit.record_event(ws, "other", "trigger", "drift")
    got = audit.read(ws, "m")
    assert [(c.action, c.version, c.evidence) for c in got] == [("rollout-advance", "2", {"p99": 3.5})]
    assert [c.model for c in audit.read(ws)] == ["m", "other"]
    assert [c.action for c in audit.read(ws.audit_log)] == ["rollout-advance", "trigger"]  # the export


def test_lines_from_before_the_table_are_imported_once(tmp_path, state_uri):
    ws = _ws(tmp_path, "a", state_uri)
    audit.record_event(ws.audit_log, "m", "set", "old history", version="1", alias="champion")  # file only
    audit.record_event(ws, "m", "set", "new", version="2", previous="1", alias="champion")
    audit.record_event(ws, "m", "set", "newer", version="3", previous="2", alias="champion")
    assert [c.version for c in audit.read(ws, "m")] == ["1", "2", "3"]


def test_a_failed_export_loses_no_record(tmp_path, state_uri):
    ws = _ws(tmp_path, "a", state_uri)
    ws.audit_log.mkdir(parents=True)  # the export cannot be written
    audit.record_event(ws, "m", "trigger", "still recorded")
    assert [c.why for c in audit.read(ws, "m")] == ["still recorded"]


def test_two_machines_share_one_log_on_postgresql(tmp_path, pg_url):
    one, two = _ws(tmp_path, "one", pg_url), _ws(tmp_path, "two", pg_url)  # different local folders
    audit.record_event(one, "m", "set", "promoted on one", version="2", alias="champion")
    audit.record_event(two, "m", "rollback", "rolled back on two", version="1", previous="2", alias="champion")
    assert [c.why for c in audit.read(one, "m")] == ["promoted on one", "rolled back on two"]
    assert [c.why for c in audit.read(two.audit_log, "m")] == ["rolled back on two"]  # each exports its own
