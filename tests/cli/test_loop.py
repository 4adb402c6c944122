"""`loopml status` says what a running controller could not do and when it tries again."""

from __future__ import annotations

from rich.console import Console

from loopml.cli.loop import _render, _status
from loopml.loop.state import StateStore
from loopml.spec import load_spec


def test_status_shows_the_controller_error_and_the_next_retrain_try(workspace, project):
    name = load_spec(project).name
    store = StateStore(workspace.state_db)
    store.record_failure(name, "drift: drift alert", "drift", "drift alert on v1", "data/new.csv: file not found",
                         now=1_000_000.0, base_s=60, cap_s=3600)
    store.put(f"controller.error.{name}", {"error": "OperationalError: database is locked [state.db]", "failures": 3,
                                           "ts": 1_000_000.0, "next_try": 1_000_004.0})
    s = _status(project, workspace.home, None)
    assert s["retries"][0]["failures"] == 1 and s["retries"][0]["next_try"] == 1_000_060.0
    assert s["controller"]["error"]["failures"] == 3
    console = Console(record=True, width=300)
    console.print(_render(s))
    text = console.export_text()
    assert "data/new.csv: file not found" in text and "next try at" in text
    assert "database is locked [state.db]" in text  # escaped, not eaten as markup
