"""Reports published to the remote home (#11), on a file:// store (the S3 run is in
tests/integration/test_platform_loop.py)."""

from __future__ import annotations

from loopml.config import Workspace
from loopml.monitor.published import publish_report
from loopml.platform.objstore import ObjectHome


def test_a_report_is_published_under_its_time_and_as_latest(tmp_path):
    ws = Workspace(tmp_path / "local", remote_home=f"file://{tmp_path}/bucket/home")
    files = {"report.html": b"<html>1</html>", "report.json": b'{"drifted": true}'}
    where = publish_report(ws, "fraud", files, now=1_700_000_000)
    assert where == f"file://{tmp_path}/bucket/home/reports/fraud/20231114T221320Z"
    store = ObjectHome(ws.reports_uri)
    assert store.read("fraud/20231114T221320Z") == files
    publish_report(ws, "fraud", {"report.html": b"<html>2</html>"}, now=1_700_000_060)
    assert store.read("fraud/latest") == {"report.html": b"<html>2</html>"}  # one whole report, not a mix
    assert store.names("fraud") == ["fraud/20231114T221320Z", "fraud/20231114T221420Z", "fraud/latest"]


def test_a_local_home_publishes_nothing(tmp_path):
    assert publish_report(Workspace(tmp_path / "h"), "fraud", {"r.html": b"x"}) is None
    assert not (tmp_path / "h").exists()
