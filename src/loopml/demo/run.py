"""``loopml demo``: the whole loop on generated data, on the embedded default.

train v1 -> promote -> serve -> replay period-1 traffic -> no drift -> replay period-2
traffic -> drift alert -> the controller retrains -> gate -> shadow -> canary steps ->
v2 promoted -> the running server answers with v2, without a restart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from loopml.config import Workspace
from loopml.demo.project import scaffold_project
from loopml.demo.traffic import Traffic, replay, wait_for_log, wait_for_version
from loopml.spec import load_spec

DEFAULT_HOME = Path(".loopml-demo")
MARKER = ".loopml-demo-workspace"  # written by the demo into its own workspace: the licence to wipe it
REPLAY_ROWS = 2000
PROBE_ROWS = 20  # requests sent after the rollout to show which version answers
ROLLOUT_TIMEOUT_S = 150.0
TRAFFIC_RATE = 300.0  # requests/s while the controller works: live traffic, not a flood


@dataclass
class DemoSummary:
    versions: list[dict[str, Any]] = field(default_factory=list)
    drift: list[dict[str, Any]] = field(default_factory=list)
    served: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    live: list[dict[str, Any]] = field(default_factory=list)
    drift_to_promoted_s: float | None = None
    seconds: float = 0.0

    def to_markdown(self) -> str:
        lines = ["# loopml demo summary", "", "## Versions", "",
                 "| version | trained on | roc_auc | log_loss | champion on the same holdout | outcome |",
                 "|---|---|---|---|---|---|"]
        for v in self.versions:
            lines.append(f"| {v['version']} | {v['data']} | {v['roc_auc']:.4f} | {v['log_loss']:.4f} | "
                         f"{v['champion_roc_auc']} | {v['outcome']} |")
        lines += ["", "## Drift checks", "", "| traffic | rows | drifted | features drifted | rule |", "|---|---|---|---|---|"]
        for d in self.drift:
            lines.append(f"| {d['window']} | {d['rows']} | {d['drifted']} | {', '.join(d['features']) or '-'} | {d['rule']} |")
        lines += ["", "## Served", "", "| phase | requests answered per version |", "|---|---|"]
        for s in self.served:
            lines.append(f"| {s['phase']} | {s['versions']} |")
        lines += ["", "## Live performance (delayed labels joined by request id)", "",
                  "| version | traffic | labelled predictions | roc_auc |", "|---|---|---|---|"]
        for r in self.live:
            lines.append(f"| {r['version']} | {r['traffic']} | {r['rows']} | {r['roc_auc']:.4f} |")
        lines += ["", "## Controller decisions", ""] + [f"- {d}" for d in self.decisions]
        lines += ["", "## Alias history", "", "| alias | from | to | who | why |", "|---|---|---|---|---|"]
        for h in self.history:
            if h["alias"] in ("champion", "challenger"):
                lines.append(f"| {h['alias']} | {h['previous'] or '-'} | {h['version']} | {h['who']} | {h['why'][:90]} |")
        if self.drift_to_promoted_s is not None:
            lines += ["", f"Drift detected to new champion serving 100%: {self.drift_to_promoted_s:.1f} s"]
        lines += ["", f"Total: {self.seconds:.1f} s", ""]
        return "\n".join(lines)


def fresh_demo_workspace(home: str | Path = DEFAULT_HOME) -> Workspace:
    """A clean demo workspace at ``home``: created when new or empty, wiped when it holds the
    demo's :data:`MARKER` (a previous demo run), refused otherwise.

    Each demo run starts from nothing, so its story (no drift on period 1, drift on period 2,
    v1 then v2) is not mixed with an earlier run's versions and logged traffic. A folder the
    demo did not create is never wiped, whatever it holds: pass a new or empty folder. The
    registry is the workspace's own SQLite (never ``LOOPML_TRACKING_URI``) so that the wipe
    resets it too. Raises :class:`~loopml.errors.NotADemoWorkspace` (exit 2).
    """
    import os
    import shutil

    from loopml.errors import NotADemoWorkspace

    given = Path(home).expanduser()
    if given.is_symlink() or (given.exists() and not given.is_dir()):
        raise NotADemoWorkspace(str(given), "it is not a folder; pass a new or empty folder with --home")
    home = given.resolve()
    if home.exists() and any(home.iterdir()):
        marker = home / MARKER
        if marker.is_symlink() or not marker.is_file():
            raise NotADemoWorkspace(str(home), f"it is not empty and not a loopml demo workspace (no {MARKER}); "
                                               "the demo wipes its workspace at each run, so pass a new or "
                                               "empty folder with --home (or delete this one yourself)")
        cwd = Path.cwd().resolve()
        if cwd == home or home in cwd.parents:
            raise NotADemoWorkspace(str(home), "the current folder is inside it; run the demo from elsewhere")
        from loopml.loop.server_process import ServerProcess

        left = ServerProcess.adopt(Workspace(home))
        if left is not None:
            raise NotADemoWorkspace(str(home), f"a server of an earlier demo still runs there (pid {left.pid}, "
                                               f"{left.url}); stop it (kill {left.pid}) and run the demo again")
        for entry in home.iterdir():  # the marker goes last, so an interrupted wipe can be redone
            if entry.name == MARKER:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)  # does not follow symlinks out of the workspace
            else:
                entry.unlink()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    (home / MARKER).write_text("loopml demo workspace: 'loopml demo' deletes everything in this folder "
                               "at its next run\n")
    os.chmod(home / MARKER, 0o600)
    return Workspace(home).init()


def _drift_row(report, rows: int, name: str) -> dict[str, Any]:
    if report is None:
        return {"window": name, "rows": rows, "drifted": False, "verdict": "could not decide", "features": [],
                "rule": "not enough traffic"}
    return {"window": name, "rows": rows, "drifted": bool(report.drifted), "verdict": report.verdict,
            "features": [f.name for f in report.features if f.drifted], "rule": getattr(report, "rule", "")}


def run_demo(workspace: Workspace, console: Console | None = None, rows: int = 12000) -> DemoSummary:
    """Run the loop end to end; returns the summary (also written to ``<home>/demo-summary.md``)."""
    from loopml.loop.admin_client import ServerClient
    from loopml.loop.controller import Controller
    from loopml.loop.pipeline import run_pipeline
    from loopml.loop.server_process import ServerProcess, admin_token
    from loopml.loop.state import StateStore
    from loopml.registry.client import Registry

    console = console or Console(log_path=False)
    t0 = time.monotonic()
    summary = DemoSummary()
    project = workspace.home / "demo-project"
    if not (project / "loopml.yaml").exists():
        console.rule("[bold]1. a project: generated card transactions in two periods")
        scaffold_project(project, rows=rows)
    spec = load_spec(project)
    p1 = pd.read_csv(project / "data" / "transactions.csv")
    p2 = pd.read_csv(project / spec.retrain.source)
    features = spec.feature_columns(list(p1.columns))

    console.rule("[bold]2. train v1 on period 1: snapshot, validate, train, evaluate, gate, register")
    step = lambda s, m: console.log(f"[dim]{s}[/]: {m}")  # noqa: E731
    r1 = run_pipeline(spec, workspace, project_dir=project, on_step=step, reason="demo: initial training")
    summary.versions.append(_version_row(r1, "period 1", "champion" if r1.promoted else "not promoted"))

    console.rule("[bold]3. serve the champion; start the controller")
    token = admin_token(workspace)
    server = ServerProcess(workspace, [f"{spec.name}@champion"], poll_interval=1.0, token=token,
                           project=project).start()  # the spec's serving section (batching) applies
    console.log(f"serving {spec.name}@champion at {server.url}")
    decisions: list[str] = []

    def say(msg: str) -> None:
        decisions.append(msg)
        console.log(escape(msg))

    ctl = Controller(spec, workspace, ServerClient(server.url, token), project_dir=project, say=say)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console) as progress:
            before = replay(server.url, p1.tail(REPLAY_ROWS), features, progress, "period-1 traffic",
                            id_column=spec.data.id_column)
        summary.served.append({"phase": "period-1 traffic", "versions": _fmt_counts(before)})
        wait_for_log(workspace, spec.name, REPLAY_ROWS)
        console.rule("[bold]4. drift check on period-1 traffic")
        d1 = _drift_row(ctl.check_drift(), REPLAY_ROWS, "period 1")
        _print_drift(console, d1)

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console) as progress:
            during = replay(server.url, p2.head(REPLAY_ROWS), features, progress, "period-2 traffic",
                            id_column=spec.data.id_column)
        summary.served.append({"phase": "period-2 traffic", "versions": _fmt_counts(during)})
        wait_for_log(workspace, spec.name, 2 * REPLAY_ROWS)
        console.rule("[bold]5. drift check on period-2 traffic: the controller's drift alert")
        t_drift = time.monotonic()
        d2 = _drift_row(ctl.check_drift(), REPLAY_ROWS, "period 2")
        _print_drift(console, d2)
        summary.drift += [d1, d2]

        console.rule("[bold]6. the controller: retrain -> gate -> shadow -> canary -> promote")
        store = StateStore(workspace.state_uri)
        with Traffic(server.url, p2.tail(REPLAY_ROWS), features, workers=3, rate=TRAFFIC_RATE) as traffic:
            deadline = time.monotonic() + ROLLOUT_TIMEOUT_S
            outcome = None
            while time.monotonic() < deadline:
                ctl.tick()
                latest = store.rollouts(spec.name, limit=1)
                if latest and latest[0].status in ("promoted", "rolled_back"):
                    outcome = latest[0]
                    break
                if latest == [] and not any(t.status in ("queued", "running") for t in store.triggers(spec.name)):
                    break  # nothing triggered or the gate rejected the challenger
                time.sleep(0.3)
        summary.served.append({"phase": "during the rollout", "versions": _fmt_counts(traffic.counts)})
        if outcome is not None:
            summary.drift_to_promoted_s = time.monotonic() - t_drift if outcome.status == "promoted" else None
            reg = Registry(workspace)
            v2 = reg.resolve(spec.name, outcome.challenger)
            metrics = reg.run_metrics(v2.run_id)
            summary.versions.append({"version": v2.version, "data": "period 2 (recent)",
                                     "roc_auc": metrics.get("roc_auc", float("nan")),
                                     "log_loss": metrics.get("log_loss", float("nan")),
                                     "champion_roc_auc": f"{metrics.get('champion_roc_auc', float('nan')):.4f} (v{outcome.champion})",
                                     "outcome": outcome.status})
            console.rule("[bold]7. the running server answers with the new champion")
            expected = outcome.challenger if outcome.status == "promoted" else outcome.champion
            wait_for_version(server.url, p2.head(1)[features], expected)
            # then count who answers, as for the other phases: "v2: 20" is 20 answers by v2
            after = replay(server.url, p2.head(PROBE_ROWS), features, workers=2)
            summary.served.append({"phase": "after the rollout", "versions": _fmt_counts(after)})
    finally:
        server.stop()
    console.rule("[bold]8. delayed labels arrive: live performance of the served predictions")
    summary.live = live_performance(workspace, spec, p1.tail(REPLAY_ROWS), p2.head(REPLAY_ROWS), project)
    for row in summary.live:
        console.log(f"v{row['version']} on {row['traffic']} traffic: roc_auc {row['roc_auc']:.4f} over {row['rows']} labelled predictions")
    summary.decisions = decisions
    summary.history = [c.to_dict() for c in Registry(workspace).history(spec.name)]
    summary.seconds = time.monotonic() - t0
    out = workspace.home / "demo-summary.md"
    out.write_text(summary.to_markdown())
    _print_summary(console, summary, out)
    return summary


def live_performance(workspace: Workspace, spec, p1: pd.DataFrame, p2: pd.DataFrame, project: Path) -> list[dict]:
    """Ingest the replayed rows' true labels (as ``loopml monitor labels`` does), join them to the
    logged predictions by request id, and compute roc_auc per served version and period."""
    from loopml.monitor.labels import ingest_labels, labels_folder, read_labelled, task_metrics

    idc, target = spec.data.id_column, spec.data.target
    labels = pd.concat([p1[[idc, target]], p2[[idc, target]]]).rename(columns={idc: "request_id", target: "label"})
    labels.to_csv(project / "data" / "labels.csv", index=False)
    ingest_labels(labels_folder(workspace.home, spec.name), labels)
    joined = read_labelled(workspace.predictions, labels_folder(workspace.home, spec.name), spec.name)
    rows = []
    for traffic, ids in (("period 1", set(p1[idc])), ("period 2", set(p2[idc]))):
        part = joined[joined["request_id"].isin(ids)]
        for version, g in part.groupby("version"):
            proba = pd.to_numeric(g["out.proba"], errors="coerce").to_numpy() if "out.proba" in g else None
            m = task_metrics(g["label"].to_numpy(), g["out.prediction"].to_numpy(), proba, spec.task)
            rows.append({"version": str(version), "traffic": traffic, "rows": len(g), "roc_auc": m.get("roc_auc", float("nan"))})
    return rows


def _version_row(r, data: str, outcome: str) -> dict[str, Any]:
    champ = r.champion_metrics.get("roc_auc") if r.champion_metrics else None
    return {"version": r.version, "data": data, "roc_auc": r.metrics.get("roc_auc", float("nan")),
            "log_loss": r.metrics.get("log_loss", float("nan")),
            "champion_roc_auc": f"{champ:.4f} (v{r.champion_version})" if champ is not None else "-",
            "outcome": outcome}


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"v{k}: {n}" for k, n in sorted(counts.items())) or "-"


def _print_drift(console: Console, d: dict[str, Any]) -> None:
    verdict = {"drift": "[red]DRIFT[/]", "no drift": "[green]no drift[/]"}.get(d["verdict"], "[yellow]could not decide[/]")
    console.log(f"{d['window']}: {verdict} over {d['rows']} logged predictions; "
                f"drifted: {', '.join(d['features']) or 'none'}; {d['rule']}")


def _print_summary(console: Console, s: DemoSummary, path: Path) -> None:
    t = Table(title="loopml demo: the loop, closed")
    for col in ("version", "trained on", "roc_auc", "champion on same holdout", "outcome"):
        t.add_column(col)
    for v in s.versions:
        t.add_row(v["version"], v["data"], f"{v['roc_auc']:.4f}", v["champion_roc_auc"], v["outcome"])
    console.print(t)
    for d in s.drift:
        console.print(f"drift on {d['window']} traffic: {d['verdict']} ({d['rule']})")
    for sv in s.served:
        console.print(f"requests answered per version, {sv['phase']}: {sv['versions']}")
    if s.drift_to_promoted_s is not None:
        console.print(f"[bold]drift detected to new champion serving 100%: {s.drift_to_promoted_s:.1f} s[/]")
    console.print(f"summary written to {path} (total {s.seconds:.1f} s)")
