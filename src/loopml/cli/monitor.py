"""``loopml monitor``: drift, delayed labels, the HTML report and alerts (thin shells)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from loopml.cli.common import HomeOpt, JsonOpt, ProjectOpt, TrackingOpt, workspace

app = typer.Typer(help="Watch served models: drift, data quality, live metrics, alerts, reports.",
                  no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Watch served models: drift, data quality, live metrics, alerts, reports."""

# `loopml monitor drift` exit codes beside 0 (no drift) and 2 (bad input, any LoopmlError)
EXIT_DRIFT = 1  # drift found, with --fail-on-drift
EXIT_UNDECIDED = 3  # no column could be checked: neither "drift" nor "no drift"

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="NAME, NAME@ALIAS or NAME/VERSION (default alias: champion).")]
WindowOpt = Annotated[Optional[int], typer.Option("--window", "-w", help="Check the last N logged rows (default: monitoring.window).")]
SinceOpt = Annotated[Optional[str], typer.Option("--since", help="Start of the window: a duration ago (2h), ISO time or epoch seconds.")]
UntilOpt = Annotated[Optional[str], typer.Option("--until", help="End of the window (same forms as --since).")]


def _console():
    from rich.console import Console

    return Console()


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    if x != 0 and abs(x) < 10 ** -digits:
        return f"{x:.1e}"
    return f"{x:.{digits}f}"


def _drift_table(report, title: str):
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col in ("feature", "method", "statistic", "p-value", "q-value", "verdict"):
        t.add_column(col, justify="right" if col in ("statistic", "p-value", "q-value") else "left",
                     no_wrap=col != "verdict")
    for f in sorted(report.features, key=lambda f: (not f.drifted, not f.ok, f.name)):
        if f.drifted:
            verdict = "[bold red]DRIFT[/]"
        else:
            verdict = "[green]ok[/]" if f.ok else f"[yellow]{f.status}[/]"
        if f.unseen:
            verdict += f" [dim](unseen: {', '.join(list(f.unseen)[:5])})[/]"
        t.add_row(f.name, f.method, _fmt(f.statistic), _fmt(f.p_value), _fmt(f.q_value), verdict)
    return t


def _when(text) -> str:
    return str(text)[:19] if text else "?"


@app.command()
def drift(
    model: ModelOpt,
    window: WindowOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    segment: Annotated[Optional[str], typer.Option(help="Also report drift per value of this column.")] = None,
    fail_on_drift: Annotated[bool, typer.Option("--fail-on-drift", help="Exit with code 1 when drift is found.")] = False,
    reference_since: Annotated[Optional[str], typer.Option(
        "--reference-since", help="Compare with this window of the log instead of the training reference "
                                  "(models without one: text, embeddings, models logged by plain MLflow).")] = None,
    reference_until: Annotated[Optional[str], typer.Option(
        "--reference-until", help="End of the reference window; the checked window then starts there.")] = None,
    project: ProjectOpt = Path("."),
    home: HomeOpt = None,
    tracking_uri: TrackingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare a window of the prediction log with the model's training reference profile
    (or, with --reference-since/--reference-until, with an earlier window of the same log).

    Exit codes: 0 no drift (or drift without --fail-on-drift); 1 drift with --fail-on-drift;
    2 bad input (model, window, spec); 3 could not decide (no column could be checked, e.g.
    too few rows), with or without --fail-on-drift.
    """
    from loopml.monitor.result import UNDECIDED
    from loopml.monitor.service import check_model_window, try_load_spec

    ws = workspace(home, tracking_uri)
    spec = try_load_spec(project)
    import time

    now = time.time()  # one clock for --since/--until and the volume window's end
    lo, hi = _time_range(since, until, now)
    quality = None
    if reference_since or reference_until:
        report = _reference_window_drift(ws, model, spec, window, lo, hi, reference_since, reference_until, now)
    else:
        report, quality, _ = check_model_window(ws, model, spec=spec, last=window, since=lo, until=hi,
                                                segment=segment, now=now)
    if as_json:
        typer.echo(json.dumps({**report.to_dict(), **({"quality": quality.to_dict()} if quality else {})}))
    else:
        console = _console()
        w = report.window
        console.print(_drift_table(report, _drift_title(report)))
        if report.outputs is not None and report.outputs.features:
            console.print(_drift_table(report.outputs, "prediction drift"))
        if report.missing_columns:
            console.print(f"[dim]reference columns not in the log (target, ids...): {', '.join(report.missing_columns)}[/]")
        if quality is not None:
            _print_quality(console, quality)
        for seg, r in (w.get("segments") or {}).items():
            names = r.get("drifted_features") or []
            verdict = f"[bold red]DRIFT[/] in {', '.join(names[:6])}" if r["drifted"] else "[green]no drift[/]"
            checked = sum(1 for f in r.get("features", []) if f.get("status") == "ok")
            console.print(f"segment {segment}={seg} ({r['n_current']:,} rows): {verdict} "
                          f"[dim]({checked} columns checked)[/]")
        if report.verdict == UNDECIDED:
            why = "; ".join(f"{f.name}: {f.status}" for f in report.problems[:3])
            console.print(f"[bold yellow]COULD NOT DECIDE[/]: {report.rule}" + (f" ({why})" if why else ""))
        else:
            verdict = "[bold red]DRIFT DETECTED[/]" if report.drifted else "[bold green]NO DRIFT[/]"
            console.print(f"{verdict}  decided by {report.decided_by}: {report.rule}")
    if report.verdict == UNDECIDED:
        raise typer.Exit(EXIT_UNDECIDED)
    if fail_on_drift and report.drifted:
        raise typer.Exit(EXIT_DRIFT)


def _drift_title(report) -> str:
    w = report.window
    served = w.get("served_by") or {}
    by = ", ".join(f"v{v}" + (f" {n:,}" if len(served) > 1 else "") for v, n in served.items())
    return (f"input drift: {w.get('rows', report.n_current):,} logged rows of '{report.model}' "
            f"({_when(w.get('start'))} .. {_when(w.get('end'))}" + (f", served by {by}" if by else "") +
            f") vs " + (f"an earlier window of the log ({report.n_reference:,} rows)" if "reference" in w
                        else f"the training reference of v{report.version} ({report.n_reference:,} rows)"))


def _reference_window_drift(ws, model: str, spec, last: int | None, lo: float | None, hi: float | None,
                            ref_since: str | None, ref_until: str | None, now: float):
    """Drift of the checked window against an earlier window of the same log (no training
    reference needed); the checked window starts where the reference ends unless --since says."""
    from loopml.errors import MonitorError
    from loopml.monitor.service import read_log_window
    from loopml.monitor.window_drift import window_drift
    from loopml.registry.client import parse_model_ref

    rlo, rhi = _time_range(ref_since, ref_until, now)
    if lo is None and rhi is not None:
        lo = rhi
    if rhi is not None and lo is not None and lo < rhi:
        raise MonitorError(f"the checked window (--since) starts before the reference window ends "
                           f"(--reference-until {ref_until}); a window compared with itself shows no drift")
    name, _ = parse_model_ref(model)
    reference = read_log_window(ws, name, since=rlo, until=rhi)
    if last is None and lo is None:
        last = spec.monitoring.window if spec is not None else 1000
    current = read_log_window(ws, name, last=last, since=lo, until=hi)
    report = window_drift(reference, current, spec.monitoring if spec is not None else None)
    report.model = name
    return report


def _time_range(since: str | None, until: str | None, now: float) -> tuple[float | None, float | None]:
    from loopml.errors import MonitorError
    from loopml.monitor.windows import parse_time

    lo = parse_time(since, now) if since else None
    hi = parse_time(until, now) if until else None
    if lo is not None and hi is not None and hi <= lo:
        raise MonitorError(f"--until ({until}) must be after --since ({since})")
    return lo, hi


def _print_quality(console, quality) -> None:
    style = {"low": "bold yellow", "high": "bold yellow", "ok": "green"}.get(quality.volume_status, "dim")
    console.print(f"[{style}]{quality.volume_message}[/]")
    other = [i for i in quality.issues if i != quality.volume_message]
    for issue in other[:10]:
        console.print(f"[yellow]quality: {issue}[/]")
    if len(other) > 10:
        console.print(f"[yellow]quality: {len(other) - 10} more issues (see --json)[/]")


@app.command()
def report(
    model: ModelOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path("report.html"),
    window: WindowOpt = None,
    history: Annotated[int, typer.Option(help="Earlier windows of the same size to plot over time.")] = 12,
    every: Annotated[str, typer.Option(help="Time bucket for live metrics from labels.")] = "1h",
    segment: Annotated[Optional[str], typer.Option(help="Add a section with drift per value of this column.")] = None,
    project: ProjectOpt = Path("."),
    home: HomeOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Write a self-contained HTML report (plots inline, opens without network)."""
    from loopml.monitor.html_report import write_html_report
    from loopml.monitor.labels import labels_folder, performance, read_labelled
    from loopml.monitor.service import (champion_reference, read_log_window, segment_drift, try_load_spec,
                                        window_metrics)
    from loopml.monitor.windows import iter_windows, parse_duration

    ws = workspace(home, tracking_uri)
    spec = try_load_spec(project)
    from loopml.errors import MonitorError

    parse_duration(every)  # bad arguments fail before any work
    if window is not None and window < 1:
        raise MonitorError(f"the window must be at least 1 row; got {window}")
    if history < 0:
        raise MonitorError(f"--history must be 0 or more; got {history}")
    version, reference = champion_reference(ws, model)
    size = window or (spec.monitoring.window if spec is not None else 1000)
    current = read_log_window(ws, version.name, last=size)
    drift_report, quality, _ = window_metrics(reference, current, spec, version=version, log_root=ws.predictions)
    segments = segment_drift(reference, current, spec, segment) if segment else None
    past = list(iter_windows(ws.predictions, version.name, size=size))[-history:] if history else []
    hist = [{"label": w.label,
             "metrics": window_metrics(reference, df, spec, version=version, log_root=ws.predictions)[2]}
            for w, df in past if len(df)]
    task = spec.task if spec is not None else ("classification" if "out.proba" in current.columns else "regression")
    labelled = read_labelled(ws.predictions, labels_folder(ws.home, version.name), version.name)
    perf = performance(labelled, task, every=every, by=()) if len(labelled) else None
    path = write_html_report(out, drift_report, history=hist, performance=perf, quality=quality,
                             segments=segments, segment_column=segment)
    seg = ""
    if segments is not None:
        seg = f"; {sum(r.drifted for r in segments.values())} of {len(segments)} segments of {segment} drifted"
    _console().print(f"report written to [bold]{path}[/] ({drift_report.verdict.upper() if drift_report.drifted else drift_report.verdict}; "
                     f"{len(hist)} windows over time{seg}; {quality.volume_message})")
    from loopml.monitor.published import publish_report  # LOOPML_HOME on object storage (#11)

    where = publish_report(ws, version.name, {"report.html": Path(path).read_bytes(), "report.json": json.dumps(
        {**drift_report.to_dict(), "quality": quality.to_dict()}, default=str).encode()})
    if where:
        _console().print(f"published to [bold]{where}[/] (and {where.rsplit('/', 1)[0]}/latest)")


@app.command()
def labels(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet of ground truth.")],
    model: ModelOpt,
    id_column: Annotated[str, typer.Option(help="Key column: request_id, or an input id column logged with each prediction.")] = "request_id",
    label_column: Annotated[Optional[str], typer.Option(help="Label column (default: the spec's target, else 'label').")] = None,
    every: Annotated[Optional[str], typer.Option(help="Metrics per time window of this size (1h, 1d...); default: overall.")] = None,
    project: ProjectOpt = Path("."),
    home: HomeOpt = None,
    tracking_uri: TrackingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest delayed labels and show live metrics per window, model version and variant."""
    import pandas as pd

    from loopml.errors import DataSourceError
    from loopml.monitor.labels import check_join_key, ingest_labels, labels_folder, performance, read_labelled
    from loopml.monitor.windows import parse_duration
    from loopml.monitor.service import try_load_spec
    from loopml.registry.client import parse_model_ref

    ws = workspace(home, tracking_uri)
    spec = try_load_spec(project)
    name, _ = parse_model_ref(model)
    label_column = label_column or (spec.data.target if spec is not None else "label")
    try:
        df = pd.read_parquet(file) if file.suffix in (".parquet", ".pq") else pd.read_csv(file)
    except (OSError, ValueError) as exc:
        raise DataSourceError(str(file), f"cannot read labels ({exc})") from None
    if every:
        parse_duration(every)  # bad arguments fail before anything is ingested
    check_join_key(ws.predictions, name, id_column)
    folder = labels_folder(ws.home, name)
    _, n = ingest_labels(folder, df, id_column=id_column, label_column=label_column)
    joined = read_labelled(ws.predictions, folder, name, id_column=id_column)
    task = spec.task if spec is not None else ("classification" if "out.proba" in joined.columns else "regression")
    rows = performance(joined, task, every=every)
    if as_json:
        typer.echo(json.dumps({"ingested": n, "matched": int(len(joined)), "metrics": rows}, default=str))
        return
    from rich.table import Table

    console = _console()
    console.print(f"ingested {n:,} labels; {len(joined):,} logged predictions of '{name}' now have a label")
    if not rows:
        return
    keys = [k for k in rows[0] if k in ("window_start", "version", "variant")]
    mets = [k for k in rows[0] if k not in keys]
    t = Table(title=f"live {task} metrics")
    for k in keys + mets:
        t.add_column(k, justify="left" if k in keys else "right")
    for r in rows:
        t.add_row(*[str(r.get(k))[:16] for k in keys], *[_fmt(r.get(k), 4) if k != "count" else f"{int(r[k]):,}" for k in mets])
    console.print(t)


@app.command()
def alerts(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="With --check: the model to evaluate.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Evaluate the rules on the latest window now and notify.")] = False,
    rules_file: Annotated[Optional[Path], typer.Option("--rules", help="YAML file of alert rules (default: monitoring.alerts in loopml.yaml).")] = None,
    export_prometheus: Annotated[Optional[Path], typer.Option("--export-prometheus", help="Write the rules as a Prometheus alerting-rules file.")] = None,
    interval: Annotated[str, typer.Option(help="Evaluation interval assumed by the Prometheus export.")] = "5m",
    window: WindowOpt = None,
    project: ProjectOpt = Path("."),
    home: HomeOpt = None,
    tracking_uri: TrackingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List open alerts and recent notifications; evaluate rules with --check; export to Prometheus."""
    from loopml.monitor.alert_store import AlertStore
    from loopml.monitor.service import check_alerts, load_rules, try_load_spec

    ws = workspace(home, tracking_uri)
    spec = try_load_spec(project)
    rules = load_rules(spec, rules_file)
    console = _console()
    if export_prometheus is not None:
        from loopml.monitor.prom_rules import prometheus_rules_yaml

        export_prometheus.write_text(prometheus_rules_yaml(rules, evaluation_interval=interval))
        console.print(f"{len(rules)} rules written to [bold]{export_prometheus}[/]")
        return
    if check:
        if not model:
            from loopml.errors import MonitorError

            raise MonitorError("--check needs --model NAME: the model whose latest window the rules evaluate")
        events, delivered, failed = check_alerts(ws, model, rules, spec=spec, last=window)
        for e in events:
            console.print(e.message)
        for e, err in failed:
            console.print(f"[yellow]delivery pending for {e.rule}: {err}[/]")
    with AlertStore(ws.state_uri) as store:
        states, events = store.states(), store.events(limit=20)
    if as_json:
        from dataclasses import asdict

        typer.echo(json.dumps({"alerts": [asdict(s) for s in states], "events": [asdict(e) for e in events]}))
        return
    if not rules:
        console.print("no alert rules: add monitoring.alerts to loopml.yaml or pass --rules FILE "
                      "(without rules, 'loopml loop' treats the drift verdict itself as the alert)")
    if not states and not events:
        console.print("no open alerts and no notifications yet"
                      + (f" ({len(rules)} rule{'s' if len(rules) != 1 else ''}; evaluate them with --check -m MODEL)"
                         if rules else ""))
        return
    from rich.table import Table

    t = Table(title=f"alerts ({len(rules)} rules)")
    for col in ("rule", "model", "status", "breaches", "value", "since"):
        t.add_column(col)
    for s in states:
        style = {"firing": "bold red", "pending": "yellow"}.get(s.status, "")
        t.add_row(s.rule, s.model, f"[{style}]{s.status}[/]" if style else s.status, str(s.breaches),
                  _fmt(s.value), _when_ts(s.since))
    console.print(t)
    for e in events[-10:]:
        console.print(f"[dim]{_when_ts(e.ts)}[/] {e.message}{'' if e.delivered else ' [yellow](not delivered yet)[/]'}")


def _when_ts(ts: float | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else "-"
