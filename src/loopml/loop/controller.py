"""The controller: triggers -> retrain -> gate -> progressive rollout -> promote or roll back.

Each :meth:`Controller.tick` does one bounded piece of work and every state change is a
transaction in ``state.db`` (see :mod:`loopml.loop.state`), written *before* its side
effects, which are idempotent. A controller killed at any instant and started again
re-applies the side effects of the state it finds (``resume``), so a rollout resumes or
finishes rolling back deterministically: the champion alias names one version at all
times, and the server keeps serving it while no controller runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from loopml.config import Workspace
from loopml.errors import LoopmlError
from loopml.loop import signals
from loopml.loop.admin_client import ServerClient
from loopml.loop.latency import latency_verdict
from loopml.loop.rollout import ADVANCE, HOLD, ROLLBACK, decide_step, policy_for, step_label
from loopml.loop.state import Rollout, StaleRollout, StateStore
from loopml.registry import audit
from loopml.registry.client import CHAMPION, Registry
from loopml.spec import ProjectSpec

Say = Callable[[str], None]
WHO = "loopml-controller"


class Controller:
    def __init__(self, spec: ProjectSpec, workspace: Workspace, server: ServerClient, *,
                 project_dir: Path = Path("."), say: Say = print, clock: Callable[[], float] = time.time) -> None:
        self.spec, self.workspace, self.server = spec, workspace, server
        self.project_dir, self.say, self.clock = project_dir, say, clock
        self.store = StateStore(workspace.state_db)
        self.registry = Registry(workspace)
        self.model = spec.name
        self._last_drift_check = 0.0
        self._last_schedule = clock()
        self._seen_files: set[str] | None = None

    # -- the loop ---------------------------------------------------------------------------
    def tick(self) -> None:
        """One step of work: drive an active rollout, else poll triggers and retrain."""
        rollout = self.store.active_rollout(self.model)
        if rollout is not None:
            self.drive(rollout)
            self.poll_triggers()  # triggers during a rollout queue up behind it
            return
        self.poll_triggers()
        trigger = self.store.claim_trigger(self.model)
        if trigger is not None:
            self.retrain(trigger)

    def run(self, should_stop: Callable[[], bool], interval: float = 0.5) -> None:
        self.resume()
        while not should_stop():
            try:
                self.tick()
            except LoopmlError as exc:
                self.say(f"[controller] {exc}")
            time.sleep(interval)

    def resume(self) -> None:
        """Re-apply the side effects of whatever state a previous controller left."""
        rollout = self.store.active_rollout(self.model)
        if rollout is None:
            return
        self.say(f"[controller] resuming rollout {rollout.id} of v{rollout.challenger} ({rollout.status}, "
                 f"step {rollout.step + 1})")
        if rollout.status in ("running", "paused"):
            self._apply_step(rollout)
        else:
            self.drive(rollout)

    # -- triggers ---------------------------------------------------------------------------
    def poll_triggers(self) -> None:
        t = self.spec.triggers
        now = self.clock()
        if t.interval_s and now - self._last_schedule >= t.interval_s:
            self._last_schedule = now
            self._trigger("schedule", f"every {t.interval_s:.0f} s")
        if t.watch:
            self._watch_folder(self._resolve(t.watch))
        if t.on_drift and now - self._last_drift_check >= t.drift_check_interval_s:
            self._last_drift_check = now
            self.check_drift()

    def _trigger(self, kind: str, cause: str) -> None:
        trig = self.store.add_trigger(self.model, kind, cause, self.spec.triggers.debounce_s)
        if trig.status == "queued":  # merged repeats stay in state.db; the audit log gets the cause once
            audit.record_event(self.workspace.audit_log, self.model, "trigger", f"{kind}: {cause}",
                               who=WHO, evidence={"trigger": trig.id}, alias="trigger")
            self.say(f"[trigger] {kind}: {cause}")

    def _watch_folder(self, folder: Path) -> None:
        files = {str(p) for p in folder.glob("*") if p.suffix in (".csv", ".parquet", ".pq")} if folder.exists() else set()
        if self._seen_files is None:
            self._seen_files = files
            return
        new = sorted(files - self._seen_files)
        self._seen_files = files
        if new:
            self._trigger("new-data", "new file(s): " + ", ".join(Path(f).name for f in new))

    def check_drift(self):
        """Drift and quality of the champion's recent traffic against its reference.

        With alert rules in ``monitoring.alerts``, a rule that starts firing queues a retraining
        (alert state persists in ``state.db``: a restart neither re-fires nor forgets); without
        rules, the dataset drift verdict itself is the alert. Returns the
        :class:`~loopml.monitor.drift.DriftReport`, or None without enough traffic.
        """
        from loopml.monitor.predlog import read_predictions
        from loopml.monitor.service import window_metrics

        champion = self.registry.try_resolve(self.model, CHAMPION)
        if champion is None:
            return None
        log = read_predictions(self.workspace.predictions, self.model, last=self.spec.monitoring.window * 3)
        if len(log) == 0:
            return None
        log = log[log["version"].astype(str) == champion.version].tail(self.spec.monitoring.window)
        if len(log) < self.spec.triggers.drift_min_rows:
            return None
        reference = self.registry.reference_profile(champion)
        report, _, metrics = window_metrics(reference, log, self.spec, version=champion,
                                            log_root=self.workspace.predictions)
        from loopml.monitor.metrics import publish_window_metrics

        publish_window_metrics(self.workspace, self.model, champion.version, metrics)  # gauges on /metrics
        rules = self.spec.monitoring.alerts
        if rules:
            self._evaluate_alerts(rules, metrics, float(log["ts"].max().timestamp()))
        elif report.drifted:
            names = [f.name for f in report.features if f.drifted]
            self._trigger("drift", f"drift alert on v{champion.version} over {len(log)} predictions: "
                                   f"{', '.join(names[:6])} ({report.rule})")
        return report

    def _evaluate_alerts(self, rules, metrics: dict[str, float], window_end: float) -> None:
        from loopml.monitor.alert_delivery import deliver_pending
        from loopml.monitor.alert_store import AlertStore
        from loopml.monitor.alerts import evaluate

        with AlertStore(self.workspace.state_db) as store:
            events = evaluate(rules, self.model, metrics, window_end=window_end, store=store)
            deliver_pending(store, rules, log_path=self.workspace.home / "alerts.jsonl")
        for e in events:
            if e.kind == "firing":
                self._trigger("alert", f"alert '{e.rule}' firing: {e.message}")

    # -- retrain + gate ---------------------------------------------------------------------
    def retrain(self, trigger) -> Rollout | None:
        from loopml.loop.pipeline import run_pipeline
        from loopml.loop.training_window import retrain_frame

        from threadpoolctl import threadpool_limits

        self.say(f"[retrain] trigger {trigger.id} ({trigger.kind}): training on the retraining window")
        try:
            frame, source = retrain_frame(self.spec, self.project_dir, self.workspace)
            # Leave a core to the server beside us: OpenMP pools that oversubscribe a busy machine
            # spin at their barriers and slow training by orders of magnitude (seen: 1 s -> 100 s).
            with threadpool_limits(max(1, (os.cpu_count() or 2) - 1)):
                result = run_pipeline(self.spec, self.workspace, project_dir=self.project_dir, frame=frame, source=source,
                                      auto_promote=False, reason=f"retrain on {trigger.kind}: {trigger.cause}",
                                      on_step=lambda s, m: self.say(f"[retrain] {s}: {m}"))
        except LoopmlError as exc:
            self.store.finish_trigger(trigger.id, "failed", str(exc))
            self.say(f"[retrain] failed: {exc}")
            return None
        champion = self.registry.try_resolve(self.model, CHAMPION)
        version = result.version
        if champion is not None and version == champion.version:
            self.store.finish_trigger(trigger.id, "done", f"version {version} is already champion")
            return None
        prior = self.registry.resolve(self.model, version).tags.get("loopml.rollout")
        if result.cached and prior in ("rolled_back", "aborted", "rejected"):
            self.store.finish_trigger(trigger.id, "done", f"no new data: version {version} was already {prior}")
            self.say(f"[retrain] data unchanged; version {version} was already {prior}")
            return None
        for r in result.gate_reasons:
            self.say(f"[gate] {r}")
        latency_ok, latency_note = self._latency_gate(version, result.snapshot_id)
        self.say(f"[gate] {latency_note}")
        if not (result.gate_passed and latency_ok):
            self._tag(version, "loopml.rollout", "rejected")
            audit.record_event(self.workspace.audit_log, self.model, "rollout-rejected",
                               "gate failed: " + " | ".join(result.gate_reasons + [latency_note]), version=version,
                               previous=champion.version if champion else None, who=WHO)
            self.store.finish_trigger(trigger.id, "done", f"version {version} rejected by the gate")
            return None
        if champion is None:
            self.registry.promote(self.model, version, "first version: gate passed, nothing to roll out against")
            self.store.finish_trigger(trigger.id, "done", f"version {version} promoted (no champion before)")
            return None
        rollout = self.store.start_rollout(self.model, version, champion.version, trigger.id)
        self.store.finish_trigger(trigger.id, "done", f"rollout {rollout.id} of version {version} started")
        audit.record_event(self.workspace.audit_log, self.model, "rollout-start",
                           f"gate passed: {result.gate_reasons[-1] if result.gate_reasons else ''}; {latency_note}",
                           version=version, previous=champion.version, who=WHO,
                           evidence={"metrics": result.metrics, "champion_metrics": result.champion_metrics})
        self.say(f"[rollout] v{version} against champion v{champion.version}: "
                 + " -> ".join(step_label(s) for s in self.spec.rollout.steps) + " -> 100%")
        self._apply_step(rollout)
        return rollout

    def _latency_gate(self, version: str, snapshot_id: str) -> tuple[bool, str]:
        budget = self.spec.rollout.latency_budget_ms
        if budget is None:
            return True, "latency: no budget set"
        from loopml.data.snapshot import load_snapshot
        from loopml.loop.latency import single_row_p99_ms

        challenger = self.registry.load_native(self.registry.resolve(self.model, version))
        champion_ref = self.registry.try_resolve(self.model, CHAMPION)
        champion = self.registry.load_native(champion_ref) if champion_ref else None
        frame = load_snapshot(snapshot_id, self.workspace).load_frame()
        p99, champ_p99 = single_row_p99_ms(challenger, self.spec, frame, against=champion)
        return latency_verdict(p99, champ_p99, budget, self.spec.rollout.max_p99_ratio)

    # -- rollout ----------------------------------------------------------------------------
    def _apply_step(self, rollout: Rollout) -> None:
        step = self.spec.rollout.steps[min(rollout.step, len(self.spec.rollout.steps) - 1)]
        self.server.set_policy(self.model, policy_for(step, rollout.challenger))
        if not rollout.baseline:
            baseline = signals.scrape(self.server.metrics_text(), self.model)
            self.store.update_rollout(rollout, baseline=baseline)

    def drive(self, rollout: Rollout) -> None:
        if rollout.status == "paused":
            return
        if rollout.status == "promoting":
            return self._finish_promotion(rollout)
        if rollout.status == "rolling_back":
            return self._finish_rollback(rollout)
        steps = self.spec.rollout.steps
        step = steps[rollout.step]
        counters = signals.delta(signals.scrape(self.server.metrics_text(), self.model), rollout.baseline)
        ev = signals.Evidence(
            champion=signals.variant_stats(counters, rollout.champion or "", ("champion", "primary", f"v{rollout.champion}")),
            challenger=signals.variant_stats(counters, rollout.challenger, ("challenger",)))
        from loopml.monitor.predlog import read_predictions

        log = read_predictions(self.workspace.predictions, self.model, since=rollout.step_started)
        ev.challenger_logged, ev.divergence, ev.shadow_agreement = signals.log_evidence(
            log, rollout.champion or "", rollout.challenger, rollout.step_started)
        if step.kind == "canary":
            ev.challenger_logged = int(ev.challenger.requests)
        ev.online_metric_drop = self.online_metric_drop(rollout)
        decision = decide_step(step, self.spec.rollout, ev, signals.shadow_errors(counters, rollout.challenger))
        if decision.action == ADVANCE:
            self._record(rollout, "rollout-advance", decision)
            if rollout.step + 1 >= len(steps):
                rollout = self._transition(rollout, "running", decision, status="promoting")
                self.say(f"[rollout] {step_label(step)} passed: {'; '.join(decision.reasons)} -> 100%")
                self._finish_promotion(rollout)
            else:
                rollout = self._transition(rollout, "running", decision, step=rollout.step + 1,
                                           step_started=self.clock(), baseline={})
                self.say(f"[rollout] {step_label(step)} passed: {'; '.join(decision.reasons)} -> "
                         f"{step_label(steps[rollout.step])}")
                self._apply_step(rollout)
        elif decision.action == HOLD and self.clock() - rollout.step_started > self.spec.rollout.step_timeout_s:
            decision.reasons.append(f"no decision after {self.spec.rollout.step_timeout_s:.0f} s: paused; "
                                    "'loopml rollout resume' waits longer, 'loopml rollout abort' rolls back")
            self._record(rollout, "rollout-paused", decision)
            self._transition(rollout, "running", decision, status="paused")
            self.say(f"[rollout] paused at {step_label(step)}: {'; '.join(decision.reasons)}")
        elif decision.action == ROLLBACK:
            self._record(rollout, "rollout-rollback", decision)
            rollout = self._transition(rollout, "running", decision, status="rolling_back")
            self.say(f"[rollout] ROLLBACK at {step_label(step)}: {'; '.join(decision.reasons)}")
            self._finish_rollback(rollout)

    def online_metric_drop(self, rollout: Rollout, min_labelled: int = 30) -> float | None:
        """How much worse the challenger's primary metric is than the champion's on predictions
        of this step whose labels have arrived (``loopml monitor labels``); None without enough."""
        from loopml.evaluate.metrics import higher_is_better
        from loopml.monitor.labels import labels_folder, performance, read_labelled

        folder = labels_folder(self.workspace.home, self.model)
        if not folder.exists():
            return None
        labelled = read_labelled(self.workspace.predictions, folder, self.model, since=rollout.step_started)
        if len(labelled) == 0:
            return None
        metric = self.spec.evaluation.primary_metric or "roc_auc"
        by_version = {str(r["version"]): r for r in performance(labelled, self.spec.task, by=("version",))}
        champ, chall = by_version.get(str(rollout.champion), {}), by_version.get(str(rollout.challenger), {})
        if min(champ.get("count", 0), chall.get("count", 0)) < min_labelled or metric not in champ or metric not in chall:
            return None
        diff = champ[metric] - chall[metric]
        return float(diff if higher_is_better(metric) else -diff)

    def _transition(self, rollout: Rollout, expect: str, decision, **changes) -> Rollout:
        try:
            return self.store.update_rollout(rollout, expect_status=expect, decision=decision.to_dict(), **changes)
        except StaleRollout:
            return self.store.rollout(rollout.id)

    def _record(self, rollout: Rollout, action: str, decision) -> None:
        why = f"{decision.evidence.get('step')}: " + "; ".join(decision.reasons)
        audit.record_event(self.workspace.audit_log, self.model, action, why, version=rollout.challenger,
                           previous=rollout.champion, who=WHO, evidence=decision.evidence)
        self._tag(rollout.challenger, f"loopml.rollout.{rollout.id}.step{rollout.step + 1}",
                  f"{decision.action}: {why}"[:4900])

    def _finish_promotion(self, rollout: Rollout) -> None:
        self.registry.ensure_alias(self.model, CHAMPION, rollout.challenger,
                                   f"rollout {rollout.id}: all steps passed ({WHO})")
        self.server.reload(self.model)  # primary hot-swaps to the new champion, old one drains
        self.server.set_policy(self.model, {"kind": "single"})
        self._tag(rollout.challenger, "loopml.rollout", "promoted")
        self.store.update_rollout(rollout, status="promoted")
        self.say(f"[rollout] v{rollout.challenger} promoted: serving 100%")

    def _finish_rollback(self, rollout: Rollout) -> None:
        self.server.set_policy(self.model, {"kind": "single"})
        self._tag(rollout.challenger, "loopml.rollout", "rolled_back")
        self.store.update_rollout(rollout, status="rolled_back")
        self.say(f"[rollout] v{rollout.challenger} rolled back; v{rollout.champion} serves 100%")

    def _tag(self, version: str, key: str, value: str) -> None:
        try:
            self.registry.client.set_model_version_tag(self.model, version, key, value)
        except Exception:  # noqa: BLE001 - a tag is evidence for people; the audit log is the record
            pass

    def _resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.project_dir / p
