"""``loopml up``, ``status``, ``retrain`` and ``rollout``: the closed loop, running."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from loopml.cli.common import HomeOpt, JsonOpt, ProjectOpt, TrackingOpt, authorize, workspace

console = Console(log_path=False)
rollout_app = typer.Typer(help="Inspect or steer the rollout in progress.", no_args_is_help=True)


def up(project: ProjectOpt = Path("."), home: HomeOpt = None, tracking_uri: TrackingOpt = None,
       port: Annotated[Optional[int], typer.Option(help="Server port (default: the spec's serving.port).")] = None,
       run_for: Annotated[Optional[float], typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")] = None,
       no_server: Annotated[bool, typer.Option("--no-server", help="Start no server: drive the running ones at "
                                               "--server-url (on Kubernetes, the server pods' Service).")] = False,
       server_url: Annotated[Optional[str], typer.Option(help="With --no-server: the servers' URL; their admin "
                                                         "token comes from LOOPML_ADMIN_TOKEN.")] = None) -> None:
    """Start the server and the controller for the project (retrain, gate, progressive rollout).

    One controller per workspace: a second ``loopml up`` exits 2 naming the running one. The
    server is supervised: when it dies it is restarted with backoff (see ``loopml status``).
    With ``--no-server`` the controller alone runs, against servers someone else runs."""
    from loopml.loop.lock import ControllerLock
    from loopml.spec import load_spec

    _check_no_server(no_server, server_url, port)
    spec = load_spec(project)
    ws = workspace(home, tracking_uri)
    lock = ControllerLock(ws, project).acquire()  # before anything else: ControllerRunning exits 2
    try:
        _up(spec, ws, project, port, run_for, server_url if no_server else None)
    finally:
        lock.release()


def _check_no_server(no_server: bool, url: Optional[str], port: Optional[int]) -> None:
    """The token is never an argument (argv is world-readable in /proc): only the environment."""
    import os
    from urllib.parse import urlsplit

    from loopml.errors import LoopmlError

    if url is not None and not no_server:
        raise LoopmlError("--server-url: only with --no-server (without it, up starts a server of its own)")
    if not no_server:
        return
    if port is not None:
        raise LoopmlError("--port: not with --no-server (there is no server of this process to place)")
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoopmlError(f"--server-url: {url!r} is not an http(s) URL; --no-server needs the servers' URL, "
                          "e.g. --server-url http://fraud-server:8080")
    if not os.environ.get("LOOPML_ADMIN_TOKEN"):
        raise LoopmlError("LOOPML_ADMIN_TOKEN: not set; --no-server drives servers with their admin token, set it "
                          "in the environment (on Kubernetes, from the chart's Secret)")


def _up(spec, ws, project: Path, port: Optional[int], run_for: Optional[float],
        server_url: Optional[str] = None) -> None:
    import os

    from rich.markup import escape

    from loopml.errors import ServeError
    from loopml.loop.admin_client import FleetClient, ServerClient
    from loopml.loop.controller import Controller
    from loopml.loop.server_process import ServerProcess, admin_token
    from loopml.loop.supervisor import Supervisor
    from loopml.registry.client import Registry
    from loopml.serve.settings import UNSAFE_PICKLE_ENV, resolve_serving

    serving = resolve_serving({"port": port}, spec.serving)  # --port > LOOPML_SERVE_* > spec (#8)
    if serving.allow_unsafe_pickle:
        # this process checks versions too (pipeline, latency gate, alias moves), not only the server
        os.environ[UNSAFE_PICKLE_ENV] = "1"
        console.log("UNSAFE: pickle model files are allowed (serving.allow_unsafe_pickle); they run arbitrary "
                    "code when loaded")
    token = admin_token(ws)
    if Registry(ws).try_resolve(spec.name) is None:
        console.log(f"no champion for {spec.name} yet: running the pipeline first")
        from loopml.cli.model import _progress_pipeline

        _progress_pipeline(spec, ws, project)
    server = None if server_url else ServerProcess.adopt(ws)
    started = False
    if server_url:  # controller only: no process to adopt, start or supervise
        console.log(f"driving the servers at {server_url} (no server of its own)")
    elif server is not None:
        server.token = token
        try:  # alive, maybe still starting (its controller was killed meanwhile): wait for it
            server.wait_ready(timeout=90)
            console.log(f"adopted the running server at {server.url} (pid {server.pid})")
        except ServeError as exc:
            console.log(f"the recorded server (pid {server.pid}) is not answering ({exc}): replacing it")
            server.stop()
            server = None
    if server is None and not server_url:
        server = ServerProcess(ws, [f"{spec.name}@champion"], host=serving.host, port=serving.port, token=token,
                               project=project).start()
        started = True
        console.log(f"serving {spec.name}@champion at {server.url}")
    supervisor = None if server_url else Supervisor(server, spec.name, say=lambda msg: console.log(escape(msg))).start()
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *a: stop.__setitem__("now", True))
    deadline = time.monotonic() + run_for if run_for else None
    # the controller re-reads loopml.yaml from this folder when it is edited (validated first)
    project_dir = project if project.is_dir() else project.parent
    # controller only: every server behind the name (a headless Service: one address per pod)
    client = FleetClient(server_url, token) if server_url else ServerClient(server.url, token)
    ctl = Controller(spec, ws, client, project_dir=project_dir,
                     say=lambda msg: console.log(escape(msg)))
    from loopml.loop.webhook import start_webhook

    hook = None
    try:
        hook = start_webhook(ctl, token, say=lambda msg: console.log(escape(msg)))  # Alertmanager -> trigger (#11)
        ctl.run(lambda: stop["now"] or (deadline is not None and time.monotonic() > deadline))
    except KeyboardInterrupt:
        pass
    finally:
        if hook is not None:
            hook.stop()
        if supervisor is not None:
            supervisor.stop()
        if supervisor is not None and (started or supervisor.restarts):  # one it started (or restarted) stops with it
            server.stop()
            console.log("server stopped")


def status(project: ProjectOpt = Path("."), home: HomeOpt = None, tracking_uri: TrackingOpt = None,
           as_json: JsonOpt = False,
           watch: Annotated[bool, typer.Option("--watch", help="Refresh live until Ctrl-C.")] = False) -> None:
    """What is served, the traffic split, open alerts and any rollout in progress."""
    from rich.live import Live

    def snapshot() -> dict:
        return _status(project, home, tracking_uri)

    if as_json:
        console.print_json(json.dumps(snapshot(), default=str))
        return
    if not watch:
        console.print(_render(snapshot()))
        return
    with Live(_render(snapshot()), console=console, refresh_per_second=2) as live:
        try:
            while True:
                time.sleep(1)
                live.update(_render(snapshot()))
        except KeyboardInterrupt:
            pass


def _status(project: Path, home, tracking_uri) -> dict:
    from loopml.errors import LoopmlError
    from loopml.loop.admin_client import ServerClient
    from loopml.loop.server_process import ServerProcess, admin_token
    from loopml.loop.state import StateStore
    from loopml.registry.client import Registry
    from loopml.spec import load_spec

    spec = load_spec(project)
    ws = workspace(home, tracking_uri)
    reg = Registry(ws)
    out: dict = {"model": spec.name, "versions": [{"version": v.version, "aliases": v.aliases,
                                                   "rollout": v.tags.get("loopml.rollout")}
                                                  for v in reg.versions(spec.name)]}
    server = ServerProcess.adopt(ws)
    out["server"] = None
    if server is not None:
        out["server"] = {"url": server.url, "pid": server.pid, "ready": server.healthy(timeout=2.0)}
        try:
            out["served"] = ServerClient(server.url, admin_token(ws, create=False)).describe(spec.name)
        except LoopmlError as exc:
            out["served"] = {"error": str(exc)}
    store = StateStore(ws.state_uri)
    active = store.active_rollout(spec.name)
    out["rollout"] = active.to_dict() if active else None
    out["triggers"] = [t.to_dict() for t in store.triggers(spec.name, limit=5)]
    # what a running controller could not do, and when it tries again (see Controller.run/retrain)
    out["controller"] = {"error": store.get(f"controller.error.{spec.name}"),
                         "spec": store.get(f"controller.spec.{spec.name}")}
    out["retries"] = [r.to_dict() for r in store.retries(spec.name)]
    out["supervisor"] = _supervision(ws, store)
    out["alerts"] = _open_alerts(ws, spec.name)
    from loopml.train.progress import read_progress

    out["training"] = read_progress(ws.home, spec.name)  # the running (or last) training job
    return out


def _supervision(ws, store) -> dict:
    """The running controller (from its lock) and what its supervisor did to the server."""
    from loopml.loop.lock import ControllerLock
    from loopml.loop.server_process import _alive
    from loopml.loop.supervisor import STATE_KEY

    holder = ControllerLock(ws).holder()
    running = holder if holder.get("pid") and _alive(int(holder["pid"])) else None
    return {"controller": running, "server": store.get(STATE_KEY) if running else None,
            "total_restarts": (store.get(STATE_KEY) or {}).get("total_restarts", 0)}


def _open_alerts(ws, model: str) -> list:
    from loopml.monitor.alert_store import AlertStore

    with AlertStore(ws.state_uri) as store:
        return [f"{a.rule} {a.status} (value {a.value})" for a in store.states(active_only=True) if a.model == model]


def _render(s: dict) -> Table:
    from rich.markup import escape  # errors quote paths and [brackets]

    t = Table(title=f"loopml status: {s['model']}", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value", overflow="fold")
    t.add_row("versions", ", ".join(f"v{v['version']}" + (f" ({','.join(v['aliases'])})" if v["aliases"] else "")
                                    + (f" {v['rollout']}" if v["rollout"] else "") for v in s["versions"]) or "-")
    sup = s.get("supervisor") or {}
    watch = sup.get("server") or {}
    restarts = (f"; restarted {sup['total_restarts']}x, last: {watch.get('reason') or 'unknown'}"
                if sup.get("total_restarts") else "")
    if s["server"] is None:
        if watch.get("state") == "down":
            nxt = f"; restart at {_clock(watch['next_try'])}" if watch.get("next_try") else ""
            t.add_row("server", escape(f"DOWN since {_clock(watch['down_since'] or watch['ts'])} "
                                       f"({watch.get('reason')}){nxt}" + (f"; {watch['error']}" if watch.get("error") else "")))
        else:
            t.add_row("server", "not running (start it with 'loopml up')")
    else:
        served = s.get("served") or {}
        pol = served.get("policy") or {}
        prim = (served.get("primary") or {}).get("version")
        chal = (served.get("challenger") or {}).get("version")
        split = {"single": f"100% v{prim}", "shadow": f"100% v{prim}, shadow to v{chal}",
                 "canary": f"{1 - pol.get('weight', 0):.0%} v{prim} / {pol.get('weight', 0):.0%} v{chal}",
                 "ab": f"A/B by {pol.get('key')}: {pol.get('weight', 0):.0%} to v{chal}"}.get(pol.get("kind"), str(served))
        t.add_row("server", escape(f"{s['server']['url']} (pid {s['server']['pid']}"
                                   + ("" if s["server"].get("ready", True) else ", starting") + ")" + restarts))
        t.add_row("traffic", split)
    r = s.get("rollout")
    if r:
        last = r["decisions"][-1]["reasons"] if r["decisions"] else []
        t.add_row("rollout", f"#{r['id']} v{r['challenger']} vs v{r['champion']}: {r['status']}, step {r['step'] + 1}"
                  + (f" — {'; '.join(last)}" if last else ""))
    else:
        t.add_row("rollout", "none in progress")
    t.add_row("triggers", "\n".join(f"#{x['id']} {x['kind']} ({x['status']}) {x['cause']}" for x in s["triggers"]) or "-")
    ctl = s.get("controller") or {}
    if sup.get("controller"):
        c = sup["controller"]
        t.add_row("controller", f"running (pid {c['pid']}, started at {c.get('started_at')})")
    if ctl.get("error"):
        e = ctl["error"]
        t.add_row("controller", escape(f"tick failing ({e['failures']} in a row): {e['error']}; next try at {_clock(e['next_try'])}"))
    if ctl.get("spec"):
        t.add_row("loopml.yaml", escape(f"{ctl['spec']['what']} ({_clock(ctl['spec']['ts'])})"))
    if s.get("retries"):
        t.add_row("retrain retries", escape("\n".join(
            f"{r['kind']}: {r['detail']}: failed {r['failures']}x ({r['error']}); "
            + (f"next try at {_clock(r['next_try'])}" if r["waiting"] else "retrying now") for r in s["retries"])))
    if s.get("training"):
        from loopml.train.progress import describe

        t.add_row("training", escape(describe(s["training"])))
    t.add_row("alerts", "\n".join(str(a) for a in s["alerts"]) or "none open")
    return t


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def retrain(project: ProjectOpt = Path("."), home: HomeOpt = None, tracking_uri: TrackingOpt = None,
            reason: Annotated[str, typer.Option(help="Recorded as the trigger's cause.")] = "requested by hand") -> None:
    """Queue a retraining for the controller (debounced; queued behind a rollout in progress)."""
    from loopml.loop.state import StateStore
    from loopml.spec import load_spec

    spec = load_spec(project)
    ws = workspace(home, tracking_uri)
    authorize(ws, "deployer", f"a retraining of {spec.name}")
    trig = StateStore(ws.state_uri).add_trigger(spec.name, "manual", reason)
    console.print(f"trigger {trig.id} {trig.status}" + (f" ({trig.result})" if trig.result else ""))


def _steer(project: Path, home, tracking_uri, new_status: str, allowed: tuple[str, ...], **changes) -> None:
    from loopml.errors import LoopmlError
    from loopml.loop.state import StaleRollout, StateStore
    from loopml.registry import audit
    from loopml.spec import load_spec

    spec = load_spec(project)
    ws = workspace(home, tracking_uri)
    authorize(ws, "deployer", f"steering the rollout of {spec.name}")
    store = StateStore(ws.state_uri)
    r = store.active_rollout(spec.name)
    if r is None:
        raise LoopmlError(f"no rollout in progress for '{spec.name}'; see 'loopml status'")
    if r.status not in allowed:
        raise LoopmlError(f"rollout {r.id} is {r.status}; cannot {new_status} it now")
    decision = {"action": f"manual-{new_status}", "reasons": [f"by {audit.current_user()}"], "evidence": {}}
    audit.record_event(ws, spec.name, f"rollout-manual-{new_status}", f"by hand: {new_status}",
                       version=r.challenger, previous=r.champion)
    try:
        store.update_rollout(r, expect_status=r.status, decision=decision, status=new_status, **changes)
    except StaleRollout as exc:
        raise LoopmlError(f"rollout {r.id} changed meanwhile ({exc}); try again") from None
    console.print(f"rollout {r.id}: {r.status} -> {new_status} (the controller applies it on its next tick)")


@rollout_app.command("status")
def rollout_status(project: ProjectOpt = Path("."), home: HomeOpt = None, tracking_uri: TrackingOpt = None,
                   as_json: JsonOpt = False) -> None:
    """The latest rollouts and every decision with its evidence."""
    from loopml.loop.state import StateStore
    from loopml.spec import load_spec

    spec = load_spec(project)
    rollouts = StateStore(workspace(home, tracking_uri).state_uri).rollouts(spec.name, limit=5)
    if as_json:
        console.print_json(json.dumps([r.to_dict() for r in rollouts], default=str))
        return
    if not rollouts:
        console.print("no rollouts yet")
    for r in rollouts:
        console.print(f"[bold]rollout {r.id}[/]: v{r.challenger} vs champion v{r.champion}: {r.status} (step {r.step + 1})")
        for d in r.decisions:
            console.print(f"  {d['action']}: " + "; ".join(d["reasons"]))


@rollout_app.command("pause")
def rollout_pause(project: ProjectOpt = Path("."), home: HomeOpt = None, tracking_uri: TrackingOpt = None) -> None:
    """Hold the rollout at its current step (traffic stays as it is)."""
    _steer(project, home, tracking_uri, "paused", ("running",))


@rollout_app.command("resume")
def rollout_resume(project: ProjectOpt = Path("."), home: HomeOpt = None, tracking_uri: TrackingOpt = None) -> None:
    """Continue a paused rollout."""
    _steer(project, home, tracking_uri, "running", ("paused",), step_started=time.time())  # a fresh step timeout


@rollout_app.command("abort")
def rollout_abort(project: ProjectOpt = Path("."), home: HomeOpt = None, tracking_uri: TrackingOpt = None) -> None:
    """Roll back now: the champion serves 100%."""
    _steer(project, home, tracking_uri, "rolling_back", ("running", "paused"))


@rollout_app.command("promote")
def rollout_promote(project: ProjectOpt = Path("."), home: HomeOpt = None, tracking_uri: TrackingOpt = None) -> None:
    """Skip the remaining steps: promote the challenger to 100% now."""
    _steer(project, home, tracking_uri, "promoting", ("running", "paused"))


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("status")(status)
    app.command("retrain")(retrain)
    app.add_typer(rollout_app, name="rollout")
