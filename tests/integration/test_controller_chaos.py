"""SIGKILL the controller (`loopml up`) at every step of a rollout; start it again each time.

Throughout: the server keeps answering (no failed request), exactly one version is champion,
at most one rollout is active, and every decision in the state store has its audit record.
Run on both state stores: the workspace's SQLite file and PostgreSQL (``LOOPML_STATE_URI``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from loopml.demo.traffic import Traffic
from loopml.loop.server_process import ServerProcess
from loopml.loop.state import StateStore
from loopml.registry import audit
from loopml.registry.client import Registry

TOKEN = "chaos-admin-token"


def _state(store: StateStore, model: str):
    r = store.rollouts(model, limit=1)
    t = store.triggers(model, limit=1)
    return ((r[0].id, r[0].status, r[0].step) if r else None, (t[0].id, t[0].status) if t else None)


@pytest.fixture(params=["sqlite", "postgresql"])
def chaos_state_uri(request, monkeypatch):
    """The state store every process of the test uses (set in the environment they inherit)."""
    if request.param == "sqlite":
        monkeypatch.delenv("LOOPML_STATE_URI", raising=False)
        return None
    uri = request.getfixturevalue("pg_url")
    monkeypatch.setenv("LOOPML_STATE_URI", uri)
    return uri


def test_sigkill_controller_at_every_step(registered_model, project, chaos_state_uri):
    ws, name = registered_model
    if chaos_state_uri is not None:
        from loopml.config import Workspace

        ws = Workspace(ws.home, state_uri_override=chaos_state_uri)
    spec_path = project / "loopml.yaml"
    raw = yaml.safe_load(spec_path.read_text())
    raw["rollout"] = {"steps": [{"kind": "shadow", "min_requests": 30}, {"kind": "canary", "weight": 0.2},
                                {"kind": "canary", "weight": 0.5}], "min_requests": 30, "latency_budget_ms": None,
                      "max_p99_ratio": 10.0}  # crash safety here; latency has its own test
    raw["triggers"] = {"on_drift": False}
    spec_path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "LOOPML_HOME": str(ws.home), "LOOPML_ADMIN_TOKEN": TOKEN}  # with LOOPML_STATE_URI
    server = ServerProcess(ws, [f"{name}@champion"], poll_interval=0.5, token=TOKEN).start()
    store = StateStore(ws.state_uri)
    store.add_trigger(name, "manual", "chaos test")
    reg = Registry(ws)
    df = pd.read_csv(project / "data" / "transactions_recent.csv")
    feats = [c for c in df.columns if c not in ("transaction_id", "event_time", "is_fraud")]
    kills = 0
    final = None
    try:
        with Traffic(server.url, df, feats, workers=3) as traffic:
            deadline = time.monotonic() + 400  # a bound for a loaded CI machine, not a timing claim
            while time.monotonic() < deadline and final is None:
                before = _state(store, name)
                proc = subprocess.Popen([sys.executable, "-m", "loopml.cli.main", "up", "-p", str(project)],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                # let it work until the state moves, then kill it without warning
                while time.monotonic() < deadline and _state(store, name) == before and proc.poll() is None:
                    time.sleep(0.05)
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                kills += 1
                # invariants at the moment of death
                assert server.proc.poll() is None, "the server must outlive the controller"
                assert reg.resolve(name).version in {v.version for v in reg.versions(name)}
                assert len(store.rollouts(name, active_only=True)) <= 1
                latest = store.rollouts(name, limit=1)
                if latest and latest[0].status in ("promoted", "rolled_back"):
                    final = latest[0]
        assert final is not None, f"rollout did not finish after {kills} kills: {store.rollouts(name, limit=1)}"
        assert kills >= 4  # killed during retraining/start, shadow, each canary step and the promotion
        assert final.status == "promoted"
        assert reg.resolve(name).version == final.challenger
        assert traffic.errors == 0, traffic.failures
        assert final.challenger in traffic.counts and "1" in traffic.counts
        # every decision the store recorded has its audit record (duplicates allowed, never a loss)
        events = [c for c in audit.read(ws, name) if c.version == final.challenger]  # the store's table
        advances = [d for d in final.decisions if d["action"] == "advance"]
        assert len(advances) == 3
        assert len([c for c in events if c.action == "rollout-advance"]) >= len(advances)
        assert [c for c in audit.read(ws, name) if c.alias == "champion"][-1].version == final.challenger
        # the JSONL export says the same on this machine
        assert [c for c in audit.read(ws.audit_log, name) if c.alias == "champion"][-1].version == final.challenger
        if chaos_state_uri is not None:  # the rollout really lived in PostgreSQL, not in a local file
            assert StateStore(ws.state_db).rollouts(name) == []
    finally:
        server.stop()
