"""``loopml demo``: the whole loop on generated data, on the embedded default.

train v1 -> promote -> serve -> replay period-1 traffic -> no drift -> replay period-2
traffic -> drift detected -> retrain on recent data -> v2 beats v1 on a recent labelled
holdout -> v2 promoted -> the running server answers with v2, without a restart.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from loopml.config import Workspace
from loopml.demo.data import generate_transactions
from loopml.demo.project import scaffold_project
from loopml.errors import LoopmlError, ServeError
from loopml.spec import load_spec

VERSION_HEADER = "x-loopml-model-version"
REPLAY_ROWS = 2000


@dataclass
class DemoSummary:
    versions: list[dict[str, Any]] = field(default_factory=list)
    drift: list[dict[str, Any]] = field(default_factory=list)
    served: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_markdown(self) -> str:
        lines = ["# loopml demo summary", "", "## Versions", "",
                 "| version | trained on | roc_auc | log_loss | champion roc_auc (same holdout) | promoted |",
                 "|---|---|---|---|---|---|"]
        for v in self.versions:
            lines.append(f"| {v['version']} | {v['data']} | {v['roc_auc']:.4f} | {v['log_loss']:.4f} | "
                         f"{v['champion_roc_auc']} | {v['promoted']} |")
        lines += ["", "## Drift checks", "", "| traffic | rows | drifted | features drifted | rule |", "|---|---|---|---|---|"]
        for d in self.drift:
            lines.append(f"| {d['window']} | {d['rows']} | {d['drifted']} | {', '.join(d['features']) or '-'} | {d['rule']} |")
        lines += ["", "## Served", "", "| phase | versions that answered |", "|---|---|"]
        for s in self.served:
            lines.append(f"| {s['phase']} | {s['versions']} |")
        lines += ["", "## Alias history", "", "| alias | from | to | who | why |", "|---|---|---|---|---|"]
        for h in self.history:
            lines.append(f"| {h['alias']} | {h['previous'] or '-'} | {h['version']} | {h['who']} | {h['why'][:80]} |")
        lines += ["", f"Total: {self.seconds:.1f} s", ""]
        return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``loopml serve`` in a child process, stopped with SIGTERM (graceful: flushes the log)."""

    def __init__(self, workspace: Workspace, model: str, port: int, poll_interval: float = 0.5) -> None:
        self.workspace, self.model, self.port, self.poll_interval = workspace, model, port, poll_interval
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{port}"

    def start(self, timeout: float = 60.0) -> "ServerProcess":
        import httpx

        cmd = [sys.executable, "-m", "loopml.cli.main", "serve", "-m", f"{self.model}@champion",
               "--host", "127.0.0.1", "--port", str(self.port), "--home", str(self.workspace.home),
               "--poll-interval", str(self.poll_interval)]
        self.log_path = self.workspace.home / "demo-server.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServeError(f"the server exited with code {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise ServeError(f"the server did not become ready within {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()


def replay(url: str, frame: pd.DataFrame, features: list[str], progress: Progress | None = None,
           label: str = "replay", workers: int = 8) -> dict[str, int]:
    """Send each row as its own request to ``/invocations``; count the versions that answered."""
    import httpx
    import orjson

    records = frame[features].to_dict(orient="records")
    task = progress.add_task(label, total=len(records)) if progress else None
    counts: dict[str, int] = {}

    def send(chunk: list[dict]) -> dict[str, int]:
        local: dict[str, int] = {}
        with httpx.Client(base_url=url, timeout=30) as client:
            for rec in chunk:
                body = orjson.dumps({"dataframe_records": [rec]}, option=orjson.OPT_SERIALIZE_NUMPY)
                r = client.post("/invocations", content=body, headers={"content-type": "application/json"})
                if r.status_code != 200:
                    raise LoopmlError(f"server answered {r.status_code} during replay: {r.text[:200]}")
                v = r.headers.get(VERSION_HEADER, "?")
                local[v] = local.get(v, 0) + 1
                if progress:
                    progress.advance(task)
        return local

    chunks = [records[i::workers] for i in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        for local in pool.map(send, chunks):
            for k, v in local.items():
                counts[k] = counts.get(k, 0) + v
    return counts


def wait_for_log(workspace: Workspace, model: str, rows: int, timeout: float = 20.0) -> pd.DataFrame:
    from loopml.monitor.predlog import read_predictions

    deadline = time.monotonic() + timeout
    while True:
        df = read_predictions(workspace.predictions, model)
        if len(df) >= rows or time.monotonic() > deadline:
            return df
        time.sleep(0.25)


def drift_check(workspace: Workspace, spec, window: pd.DataFrame, name: str) -> dict[str, Any]:
    from loopml.monitor.drift import compute_drift
    from loopml.registry.client import Registry

    reg = Registry(workspace)
    reference = reg.reference_profile(reg.resolve(spec.name, "champion"))
    features = spec.feature_columns(list(reference.columns))
    report = compute_drift(reference, window, settings=spec.monitoring, features=features)
    drifted = [f.name for f in report.features if f.drifted]
    return {"window": name, "rows": len(window), "drifted": bool(report.drifted), "features": drifted,
            "rule": getattr(report, "rule", ""), "report": report}


def run_demo(workspace: Workspace, console: Console | None = None, rows: int = 12000) -> DemoSummary:
    """Run the loop end to end; returns the summary (also written to ``<home>/demo-summary.md``)."""
    from loopml.loop.pipeline import run_pipeline
    from loopml.registry.client import Registry

    console = console or Console()
    t0 = time.monotonic()
    summary = DemoSummary()
    project = workspace.home / "demo-project"
    if not (project / "loopml.yaml").exists():
        console.rule("[bold]1. a project: generated card transactions in two periods")
        scaffold_project(project, rows=rows)
    spec = load_spec(project)
    recent = project / "data" / "transactions_recent.csv"
    p1 = pd.read_csv(project / "data" / "transactions.csv")
    p2 = pd.read_csv(recent)
    features = spec.feature_columns(list(p1.columns))

    console.rule("[bold]2. train v1 on period 1, gate, register, promote")
    step = lambda s, m: console.log(f"[dim]{s}[/]: {m}")  # noqa: E731
    r1 = run_pipeline(spec, workspace, project_dir=project, on_step=step, reason="demo: initial training")
    summary.versions.append(_version_row(r1, "period 1"))

    server = ServerProcess(workspace, spec.name, free_port())
    console.rule("[bold]3. serve the champion")
    server.start()
    console.log(f"serving {spec.name}@champion at {server.url}")
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console) as progress:
            before = replay(server.url, p1.tail(REPLAY_ROWS), features, progress, "period-1 traffic")
        summary.served.append({"phase": "period-1 traffic", "versions": _fmt_counts(before)})
        log = wait_for_log(workspace, spec.name, REPLAY_ROWS)
        console.rule("[bold]4. drift check on period-1 traffic")
        d1 = drift_check(workspace, spec, log.tail(REPLAY_ROWS), "period 1")
        _print_drift(console, d1)

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console) as progress:
            during = replay(server.url, p2.tail(REPLAY_ROWS), features, progress, "period-2 traffic")
        summary.served.append({"phase": "period-2 traffic", "versions": _fmt_counts(during)})
        log = wait_for_log(workspace, spec.name, 2 * REPLAY_ROWS)
        console.rule("[bold]5. drift check on period-2 traffic")
        d2 = drift_check(workspace, spec, log.tail(REPLAY_ROWS), "period 2")
        _print_drift(console, d2)
        summary.drift += [{k: v for k, v in d.items() if k != "report"} for d in (d1, d2)]

        if d2["drifted"]:
            console.rule("[bold]6. drift detected: retrain on recent labelled data")
            r2 = run_pipeline(spec, workspace, project_dir=project, source=str(recent), on_step=step,
                              reason=f"demo: drift in {', '.join(d2['features'][:5])}")
            summary.versions.append(_version_row(r2, "period 2 (recent)"))
            for reason in r2.gate_reasons:
                console.log(f"gate: {reason}")
            console.rule("[bold]7. the running server picks up the new champion")
            answered = wait_for_version(server.url, p2.head(1)[features], r2.version if r2.promoted else r1.version)
            summary.served.append({"phase": "after promotion", "versions": answered})
    finally:
        server.stop()
    summary.history = [c.to_dict() for c in Registry(workspace).history(spec.name)]
    summary.seconds = time.monotonic() - t0
    out = workspace.home / "demo-summary.md"
    out.write_text(summary.to_markdown())
    _print_summary(console, summary, out)
    return summary


def wait_for_version(url: str, row: pd.DataFrame, version: str, timeout: float = 30.0) -> str:
    import httpx
    import orjson

    body = orjson.dumps({"dataframe_records": row.to_dict(orient="records")}, option=orjson.OPT_SERIALIZE_NUMPY)
    deadline = time.monotonic() + timeout
    seen = "?"
    while time.monotonic() < deadline:
        r = httpx.post(f"{url}/invocations", content=body, headers={"content-type": "application/json"}, timeout=10)
        seen = r.headers.get(VERSION_HEADER, "?")
        if seen == version:
            return f"{seen}: {r.json()['predictions']}"
        time.sleep(0.25)
    raise ServeError(f"the server still answers with version {seen}, expected {version} after {timeout:.0f} s")


def _version_row(r, data: str) -> dict[str, Any]:
    champ = r.champion_metrics.get("roc_auc") if r.champion_metrics else None
    return {"version": r.version, "data": data, "roc_auc": r.metrics.get("roc_auc", float("nan")),
            "log_loss": r.metrics.get("log_loss", float("nan")),
            "champion_roc_auc": f"{champ:.4f} (v{r.champion_version})" if champ is not None else "-",
            "promoted": "yes" if r.promoted else "no"}


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"v{k}: {n}" for k, n in sorted(counts.items()))


def _print_drift(console: Console, d: dict[str, Any]) -> None:
    verdict = "[red]DRIFT[/]" if d["drifted"] else "[green]no drift[/]"
    console.log(f"{d['window']}: {verdict} over {d['rows']} logged predictions; "
                f"drifted: {', '.join(d['features']) or 'none'}; {d['rule']}")


def _print_summary(console: Console, s: DemoSummary, path: Path) -> None:
    t = Table(title="loopml demo: the loop, closed")
    for col in ("version", "trained on", "roc_auc", "vs champion", "promoted"):
        t.add_column(col)
    for v in s.versions:
        t.add_row(v["version"], v["data"], f"{v['roc_auc']:.4f}", v["champion_roc_auc"], v["promoted"])
    console.print(t)
    for d in s.drift:
        console.print(f"drift on {d['window']} traffic: {'yes' if d['drifted'] else 'no'} ({d['rule']})")
    for sv in s.served:
        console.print(f"served during {sv['phase']}: {sv['versions']}")
    console.print(f"summary written to {path} ({s.seconds:.1f} s)")
