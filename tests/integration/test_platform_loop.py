"""#11 done-when: the loop on the platform, configured only by LOOPML_HOME=s3://...,
LOOPML_TRACKING_URI=http://... and LOOPML_STATE_URI=postgresql://... (+ the AWS_* variables).

On the session's real platform (PostgreSQL, SeaweedFS, MLflow; ``local_platform``): ``loopml
run`` trains and promotes v1; two ``loopml serve`` replicas, each with its own local folder
(two machines), serve it; period-1 then drifted period-2 traffic goes to both; ``loopml monitor
drift`` (a third machine) reads both replicas' published log parts from the bucket and finds
the drift; the controller (a fourth local folder) checks drift itself and publishes its gauges,
the platform's Prometheus scrapes them and fires, Alertmanager posts to the controller's webhook
with a deployer token, which queues the retraining; the controller trains v2, and its shadow and canary steps, set through one replica's admin API, are applied by both
replicas from the PostgreSQL state store; v2 is promoted and both replicas answer with it.
The time of each step is printed (``-s``); docs/platform.md has the figures.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pandas as pd
import pytest

from loopml.demo.traffic import Traffic, replay, wait_for_version

CLI = [sys.executable, "-m", "loopml.cli.main"]
TOKEN = "platform-loop-admin-token"
ROLLOUT_TIMEOUT_S = 240.0


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Steps:
    """Wall time of each step, printed as it ends and kept for the summary line."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._t = time.monotonic()

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.times[name] = now - self._t
        self._t = now
        print(f"[platform loop] {name}: {self.times[name]:.1f} s", flush=True)


def _cli(env: dict, machine: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    out = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                         env=dict(env, LOOPML_LOCAL_DIR=str(machine)))
    assert out.returncode in (0, 1), out.stderr[-3000:]  # 1: monitor drift --fail-on-drift found drift
    return out


def _serve(env: dict, machine: Path, project: Path, port: int, model: str) -> subprocess.Popen:
    log = open(machine.parent / f"{machine.name}.log", "wb")
    return subprocess.Popen([*CLI, "serve", "-m", f"{model}@champion", "-p", str(project), "--port", str(port),
                             "--poll-interval", "1"], stdout=log, stderr=subprocess.STDOUT,
                            env=dict(env, LOOPML_LOCAL_DIR=str(machine)))


def _ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"replica exited with {proc.returncode}"
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} not ready after {timeout} s")


def _published_ids(ws, model: str) -> set[str]:
    from loopml.monitor.predlog import read_predictions

    return set(read_predictions(ws.predictions, model)["request_id"])


def _wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _relax_latency(path: Path) -> None:
    """The gate's and the canary's latency limits are about the model, not the platform: on a
    loaded shared machine a p99 over 50 ms would reject v2 and fail the loop for no reason here."""
    text = path.read_text()
    for old, new in (("latency_budget_ms: 50", "latency_budget_ms: 5000"), ("max_p99_ratio: 2.0", "max_p99_ratio: 100.0"),
                     ("p99_slack_ms: 20", "p99_slack_ms: 5000")):
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)


def test_two_replicas_on_the_platform_close_the_loop(local_platform, platform_env, tmp_path, monkeypatch):
    from loopml.config import Workspace
    from loopml.loop.admin_client import ServerClient
    from loopml.loop.controller import Controller
    from loopml.loop.state import StateStore
    from loopml.monitor.remotelog import model_folder
    from loopml.platform.objstore import ObjectHome
    from loopml.registry.client import Registry
    from loopml.loop.webhook import AlertWebhook
    from loopml.monitor.alerts import AlertRule
    from loopml.spec import load_spec
    from loopml.store.tokens import TokenStore, Verifier

    steps = Steps()
    home = f"s3://loopml/loop-{uuid.uuid4().hex[:8]}"
    env = dict(platform_env, LOOPML_HOME=home, LOOPML_ADMIN_TOKEN=TOKEN,
               LOOPML_PREDICTION_LOG_PUBLISH_INTERVAL_S="1")
    assert env["LOOPML_TRACKING_URI"].startswith("http://") and env["LOOPML_STATE_URI"].startswith("postgresql")
    for k in list(os.environ):
        if k.startswith(("LOOPML_", "AWS_", "MLFLOW_")):
            monkeypatch.delenv(k)
    for k, v in env.items():
        if k.startswith(("LOOPML_", "AWS_", "PG")):
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # as the CLI does
    project = tmp_path / "proj"
    assert _cli(env, tmp_path / "trainer", "new", str(project), "--rows", "6000").returncode == 0
    _relax_latency(project / "loopml.yaml")
    # a model of its own: other tests of the session register "fraud" on the same MLflow and
    # fire its drift alert through the same Alertmanager
    model = f"fraud-loop-{uuid.uuid4().hex[:6]}"
    text = (project / "loopml.yaml").read_text()
    assert "name: fraud\n" in text
    (project / "loopml.yaml").write_text(text.replace("name: fraud\n", f"name: {model}\n", 1))
    spec = load_spec(project)
    p1 = pd.read_csv(project / "data" / "transactions.csv")
    p2 = pd.read_csv(project / spec.retrain.source)
    features = spec.feature_columns(list(p1.columns))
    steps.done("scaffold")

    out = _cli(env, tmp_path / "trainer", "run", "-p", str(project), "--json")
    result = json.loads(out.stdout[out.stdout.index("{"):])
    steps.done("train v1 (run: snapshot, validate, train, evaluate, gate, register, promote)")
    again = _cli(env, tmp_path / "trainer-2", "run", "-p", str(project), "--json")  # another machine
    cached = json.loads(again.stdout[again.stdout.index("{"):])
    assert cached["cached"] is True and cached["version"] == "1"  # the pipeline cache is on the bucket too
    steps.done("the same run on a second machine: nothing changed (cache on the bucket)")
    monkeypatch.setenv("LOOPML_LOCAL_DIR", str(tmp_path / "controller"))
    ws = Workspace.from_env().init()
    assert ws.remote_home == home and ws.data_remote
    reg = Registry(ws)
    assert reg.resolve(model).version == "1", result

    ports = [_port(), _port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    replicas = [_serve(env, tmp_path / f"replica-{k}", project, p, model) for k, p in enumerate(ports)]
    try:
        for url, proc in zip(urls, replicas):
            _ready(url, proc)
        steps.done("start two replicas")

        sent: list[set[str]] = [set(), set()]
        for k, url in enumerate(urls):  # period 1: 500 rows to each replica
            chunk = p1.tail(1000).iloc[k::2]
            assert replay(url, chunk, features, id_column="transaction_id") == {"1": len(chunk)}
            sent[k] |= set(chunk["transaction_id"].astype(str))
        drifted = p2.head(2400)
        for k, url in enumerate(urls):  # period 2 (drifted): 1200 rows to each
            chunk = drifted.iloc[k::2]
            replay(url, chunk, features, id_column="transaction_id")
            sent[k] |= set(chunk["transaction_id"].astype(str))
        steps.done("serve 3400 requests from both replicas")
        t_drift = time.monotonic()

        everything = sent[0] | sent[1]
        _wait(lambda: everything <= _published_ids(ws, model), 60, "both replicas' rows in the bucket")
        steps.done("published to the bucket (answer -> visible to the monitor)")
        prefixes = model_folder(ws.predictions_uri, model).names()
        assert len(prefixes) == 2, prefixes  # one prefix per replica
        drift = _cli(env, tmp_path / "monitor", "monitor", "drift", "-m", model, "-p", str(project), "--json")
        report = json.loads(drift.stdout[drift.stdout.index("{"):])
        assert report["drifted"] is True, report
        steps.done("monitor (third machine) reads both replicas and finds drift")
        _cli(env, tmp_path / "monitor", "monitor", "report", "-m", model, "-p", str(project),
             "-o", str(tmp_path / "report.html"), "--history", "0")
        published = ObjectHome(ws.reports_uri).read(f"{model}/latest")
        assert published["report.html"] == (tmp_path / "report.html").read_bytes()
        assert json.loads(published["report.json"])["drifted"] is True
        steps.done("monitor report published to the bucket")

        # the retraining comes through the real alerting stack: the controller's drift check
        # publishes its gauges on its listener's /metrics, the platform's Prometheus scrapes it and
        # its loopml rule fires, Alertmanager posts to the listener with a deployer token
        decisions: list[str] = []
        never = AlertRule(name="NeverFires", metric="drift.share", op=">", threshold=2.0)
        watching = spec.model_copy(update={"monitoring": spec.monitoring.model_copy(update={"alerts": [never]})})
        ctl = Controller(watching, ws, ServerClient(urls[0], TOKEN), project_dir=project, say=decisions.append)
        store = StateStore(ws.state_uri)
        token_file = tmp_path / "alertmanager.token"
        token_file.write_text(TokenStore(ws.state_uri).create("alertmanager-loop", "deployer") + "\n")
        token_file.chmod(0o600)
        hook = AlertWebhook(ctl, Verifier(ws.state_uri)).start()
        target = local_platform.root / "prometheus" / "targets" / "platform-loop.json"
        try:
            assert ctl.check_drift().drifted  # gauges published, no trigger of its own (the rule never fires)
            assert store.triggers(model) == []
            local_platform.set_alert_webhook(hook.url, token_file)
            local_platform.add_scrape_targets("platform-loop", [f"127.0.0.1:{hook.port}"])
            triggers = _wait(lambda: store.triggers(model), 240, "the Alertmanager-triggered retraining")
        finally:
            target.unlink(missing_ok=True)
            local_platform.set_alert_webhook(None)
            hook.stop()
        # one retraining queued; a second drift rule firing with it (LoopmlDriftShareHigh) merges into it
        assert {t.kind for t in triggers} == {"drift"} and [t.status for t in triggers].count("queued") == 1
        assert any("LoopmlDrift" in t.cause for t in triggers)
        steps.done("drift gauge -> Prometheus -> Alertmanager -> controller webhook: trigger in PostgreSQL")
        ctl.spec = spec
        traffic = [Traffic(url, p2.tail(2000).iloc[k::2], features, workers=2, rate=100.0) for k, url in enumerate(urls)]
        outcome = None
        for t in traffic:
            t.__enter__()
        try:
            deadline = time.monotonic() + ROLLOUT_TIMEOUT_S
            while time.monotonic() < deadline and outcome is None:
                ctl.tick()
                latest = store.rollouts(model, limit=1)
                if latest and latest[0].status in ("promoted", "rolled_back"):
                    outcome = latest[0]
                time.sleep(0.3)
        finally:
            for t in traffic:
                t.__exit__(None, None, None)
        assert outcome is not None and outcome.status == "promoted", "\n".join(decisions)
        steps.done("controller: retrain, gate, shadow, canary steps, promote")
        drift_to_champion = time.monotonic() - t_drift
        for k, t in enumerate(traffic):  # both replicas applied the canary split set through replica 0
            assert {"1", outcome.challenger} <= set(t.counts), (k, t.counts, decisions)
        for url in urls:
            assert wait_for_version(url, p2.head(1)[features], outcome.challenger) == outcome.challenger
        assert reg.resolve(model).version == outcome.challenger
        steps.done("both replicas answer with the new champion")
        print(f"[platform loop] drift to champion: {drift_to_champion:.1f} s; "
              f"total {sum(steps.times.values()):.1f} s", flush=True)
        assert not list(tmp_path.rglob("mlflow.db")) and not list(tmp_path.rglob("state.db"))
    finally:
        for proc in replicas:
            proc.terminate()
        for proc in replicas:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
