"""The whole demo loop against real MLflow on SQLite and a real server on 127.0.0.1."""

from __future__ import annotations

from rich.console import Console

from loopml.demo.run import PROBE_ROWS, run_demo
from loopml.loop.server_process import ServerProcess
from loopml.registry.client import Registry


def test_demo_closes_the_loop(workspace):
    summary = run_demo(workspace, console=Console(quiet=True), rows=6000)
    reg = Registry(workspace)
    versions = reg.versions("fraud")
    assert [v.version for v in versions] == ["1", "2"]
    assert reg.resolve("fraud").version == "2", "\n".join(summary.decisions)
    # drift: none on period-1 traffic, found on period-2 traffic by the FDR-controlled verdict
    d1, d2 = summary.drift
    assert d1["drifted"] is False and d2["drifted"] is True
    assert "Benjamini-Hochberg" in d2["rule"] and len(d2["features"]) >= 2
    # served: v1 before the promotion, v2 after it, from the same running server
    served = {s["phase"]: s["versions"] for s in summary.served}
    assert served["period-1 traffic"] == "v1: 2000" and served["period-2 traffic"] == "v1: 2000"
    assert served["after the rollout"] == f"v2: {PROBE_ROWS}"  # answers counted, not a prediction
    assert "v2" in served["during the rollout"] and "v1" in served["during the rollout"]
    # v2 beat v1 on the recent labelled holdout, and went through shadow and canary steps
    v1_row, v2_row = summary.versions
    assert v2_row["outcome"] == "promoted"
    assert v2_row["roc_auc"] > float(v2_row["champion_roc_auc"].split()[0])
    assert any("shadow passed" in d for d in summary.decisions)
    assert any("canary 50% passed" in d for d in summary.decisions)
    champion_changes = [h for h in summary.history if h["alias"] == "champion"]
    assert [h["version"] for h in champion_changes] == ["1", "2"]
    assert summary.drift_to_promoted_s is not None
    # delayed labels joined by request id show v1's live performance falling on period-2 traffic
    live = {(r["version"], r["traffic"]): r for r in summary.live}
    assert live[("1", "period 1")]["rows"] == 2000 and live[("1", "period 2")]["rows"] == 2000
    assert live[("1", "period 2")]["roc_auc"] < live[("1", "period 1")]["roc_auc"] - 0.2
    md = (workspace.home / "demo-summary.md").read_text()
    assert "| 2 | period 2 (recent)" in md and "Drift detected to new champion serving 100%" in md
    # it leaves no process running
    assert ServerProcess.adopt(workspace) is None
