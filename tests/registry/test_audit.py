import os

from loopml.registry import audit


def test_the_audit_log_is_private(tmp_path):
    old = os.umask(0o022)
    try:
        audit.record_event(tmp_path / "audit.jsonl", "m", "trigger", "why")
    finally:
        os.umask(old)
    assert (tmp_path / "audit.jsonl").stat().st_mode & 0o777 == 0o600
