"""The controller: triggers -> retrain -> gate -> progressive rollout -> promote or roll back.

Each :meth:`Controller.tick` does one bounded piece of work and every state change is a
transaction in ``state.db`` (see :mod:`loopml.loop.state`), written *before* its side
effects, which are idempotent. A controller killed at any instant and started again
re-applies the side effects of the state it finds (``resume``), so a rollout resumes or
finishes rolling back deterministically: the champion alias names one version at all
times, and the server keeps serving it while no controller runs.

It fails closed and keeps going (issue #8): :meth:`Controller.run` survives any exception of
a tick (it says it in one line, records it for ``loopml status`` and the audit log, backs off
exponentially and goes on, re-applying the state it finds like a restarted controller); a
retraining that fails is retried per cause with exponential backoff (``state.db`` table
``retries``); an edited ``loopml.yaml`` is validated and adopted, a broken edit reported once
and the running spec kept; a version that was rolled back is blocked from automatic rollout
until someone promotes it by hand; a registry that cannot be asked stops the step and changes
nothing (never "no champion": that would promote without a rollout).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path
from typing import Callable

from loopml.config import Workspace
from loopml.errors import LoopmlError, ModelCheckFailed, SpecError
from loopml.loop import signals
from loopml.loop.admin_client import ServerClient, ServerRefused
from loopml.loop.latency import latency_verdict
from loopml.loop.rollout import ADVANCE, HOLD, ROLLBACK, decide_step, policy_for, step_label
from loopml.loop.state import Rollout, StaleRollout, StateStore
from loopml.registry import audit
from loopml.registry.client import CHAMPION, Registry
from loopml.spec import SPEC_FILE, ProjectSpec, load_spec

Say = Callable[[str], None]
WHO = "loopml-controller"
TICK_BACKOFF_CAP_S = 60.0  # a failing tick waits interval x 2^failures, at most this
RETRY_MIN_S = 10.0  # a failed retraining waits at least max(this, triggers.debounce_s) ...
RETRY_CAP_S = 3600.0  # ... doubling per failure of the same cause, at most an hour


def cause_key(kind: str, cause: str) -> str:
    """The backoff key of a trigger: its kind and cause, numbers blanked ("over 512
    predictions" and "over 530 predictions" are the same cause failing again)."""
    return f"{kind}: " + re.sub(r"\d+(?:\.\d+)?", "#", cause)


def one_line(exc: BaseException) -> str:
    what = str(exc) if isinstance(exc, LoopmlError) else f"{type(exc).__name__}: {exc}"
    return " ".join(what.split())[:500]


class Controller:
    def __init__(self, spec: ProjectSpec, workspace: Workspace, server: ServerClient, *,
                 project_dir: Path = Path("."), say: Say = print, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.spec, self.workspace, self.server = spec, workspace, server
        self.project_dir, self.say, self.clock, self.sleep = project_dir, say, clock, sleep
        self.store = StateStore(workspace.state_uri)
        self.registry = Registry(workspace)
        self.model = spec.name
        self._last_drift_check = 0.0
        self._last_schedule = clock()
        self._seen_files: set[str] | None = None
        self._spec_stamp: tuple | None = None  # (mtime_ns, size) of loopml.yaml when last read
        self._spec_digest: str | None = None  # its content: the running spec, or a broken edit already reported
        self._last_error: str | None = None

    # -- the loop ---------------------------------------------------------------------------
    def tick(self) -> None:
        """One step of work: drive an active rollout, else poll triggers and retrain."""
        self.reload_spec()
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
        """Tick until ``should_stop``; no exception of a tick ends the loop (see :meth:`_tick_failed`)."""
        failures = 0
        resumed = False
        while not should_stop():
            try:
                if not resumed:
                    self.resume()
                    resumed = True
                self.tick()
            except Exception as exc:  # noqa: BLE001 - the loop outlives MLflow, SQLite and disk errors
                failures += 1
                resumed = False  # next time, re-apply the state we find, as a restarted controller would
                delay = min(TICK_BACKOFF_CAP_S, interval * 2.0 ** failures)
                self._tick_failed(exc, failures, delay)
                self.sleep(delay)
                continue
            if failures:
                self._tick_recovered(failures)
                failures = 0
            self.sleep(interval)

    def _tick_failed(self, exc: BaseException, failures: int, delay: float) -> None:
        """One line to the operator; the error in state.db (``loopml status``) and, once per
        distinct error, in the audit log. Recording must not fail the loop either."""
        what = one_line(exc)
        self.say(f"[controller] tick failed ({failures} in a row): {what}; next try in {delay:.1f} s")
        record = {"error": what, "failures": failures, "ts": self.clock(), "next_try": self.clock() + delay}
        try:
            self.store.put(f"controller.error.{self.model}", record)
        except Exception:  # noqa: BLE001 - state.db may be what failed
            pass
        if what != self._last_error:
            try:
                audit.record_event(self.workspace, self.model, "controller-error", what, who=WHO,
                                   evidence={"failures": failures, "next_try_in_s": delay}, alias="controller")
                self._last_error = what
            except Exception:  # noqa: BLE001 - the audit log may be what failed
                pass

    def _tick_recovered(self, failures: int) -> None:
        self.say(f"[controller] recovered after {failures} failed tick(s)")
        self._last_error = None
        try:
            self.store.put(f"controller.error.{self.model}", None)
        except Exception:  # noqa: BLE001 - outside the tick's try: must not end the loop
            pass

    def reload_spec(self) -> bool:
        """Adopt an edited ``loopml.yaml`` once it validates; True when the spec changed.

        A broken edit is said once (one line naming the field) and the running spec is kept;
        so is an edit that renames the model (its state, traffic and registry entries are
        under the old name: that takes a restart of ``loopml up``).
        """
        path = self.project_dir / SPEC_FILE
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp == self._spec_stamp:
            return False
        first = self._spec_stamp is None and self._spec_digest is None
        self._spec_stamp = stamp
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            digest = "missing"
        if first:  # the spec we were started with was read from this file
            self._spec_digest = digest
            return False
        if digest == self._spec_digest:
            return False
        self._spec_digest = digest
        try:
            spec = load_spec(self.project_dir)
            if spec.name != self.spec.name:
                raise SpecError(str(path), f"name: changed from '{self.spec.name}' to '{spec.name}'; "
                                           "restart 'loopml up' to run the loop for another model")
        except SpecError as exc:
            self.say(f"[controller] {SPEC_FILE} edit not applied, still running the previous spec: {exc}")
            self._record_spec(f"edit not applied: {exc}")
            return False
        old, new = self.spec.model_dump(), spec.model_dump()
        changed = [k for k in new if new[k] != old.get(k)]
        self.spec = spec
        self.say(f"[controller] {SPEC_FILE} changed: now running the edited spec"
                 + (f" ({', '.join(changed)})" if changed else ""))
        self._record_spec(f"reloaded: {', '.join(changed) or 'no setting changed'}")
        return True

    def _record_spec(self, what: str) -> None:
        try:
            self.store.put(f"controller.spec.{self.model}", {"ts": self.clock(), "what": what})
        except Exception:  # noqa: BLE001 - bookkeeping for 'loopml status' only
            pass

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
        for r in self.store.take_due_retries(self.model, now):
            self.say(f"[retrain] retrying {r.kind}: {r.detail} (after {r.failures} failure(s): {r.error})")
            self.store.add_trigger(self.model, r.kind, r.detail)
        if t.interval_s and now - self._last_schedule >= t.interval_s:
            self._last_schedule = now
            self._trigger("schedule", f"every {t.interval_s:.0f} s")
        if t.watch:
            self._watch_folder(self._resolve(t.watch))
        if t.on_drift and now - self._last_drift_check >= t.drift_check_interval_s:
            self._last_drift_check = now
            self.check_drift()

    def _trigger(self, kind: str, cause: str, who: str = WHO):
        """Queue a retraining (or merge it); ``who`` is the audit's actor (a token's name when
        Alertmanager's webhook calls this from its thread: :mod:`loopml.loop.webhook`)."""
        pending = self.store.retry(self.model, cause_key(kind, cause))
        if pending is not None and pending.waiting:
            return None  # this cause failed: its retry is scheduled (poll_triggers queues it when due)
        trig = self.store.add_trigger(self.model, kind, cause, self.spec.triggers.debounce_s)
        if trig.status == "queued":  # merged repeats stay in state.db; the audit log gets the cause once
            audit.record_event(self.workspace, self.model, "trigger", f"{kind}: {cause}",
                               who=who, evidence={"trigger": trig.id}, alias="trigger")
            self.say(f"[trigger] {kind}: {cause}")
        return trig

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

        with AlertStore(self.workspace.state_uri) as store:
            events = evaluate(rules, self.model, metrics, window_end=window_end, store=store)
            deliver_pending(store, rules, log_path=self.workspace.home / "alerts.jsonl")
        for e in events:
            if e.kind == "firing":
                self._trigger("alert", f"alert '{e.rule}' firing: {e.message}")

    # -- retrain + gate ---------------------------------------------------------------------
    def retrain(self, trigger) -> Rollout | None:
        """Train on the retraining window, gate, and start a rollout (or promote a first version).

        Any failure before the rollout starts fails the trigger, changes no alias and schedules
        a retry of its cause with exponential backoff (:meth:`_retrain_failed`)."""
        try:
            gated = self._train_and_gate(trigger)
        except Exception as exc:  # noqa: BLE001 - MLflow, data, a registry that cannot be asked, ...
            self._retrain_failed(trigger, exc)
            return None
        self.store.clear_retries(self.model)  # it worked: every backoff of this model ends
        if gated is None:
            return None
        version, champion, result, latency_note = gated
        rollout = self.store.start_rollout(self.model, version, champion.version, trigger.id)
        self.store.finish_trigger(trigger.id, "done", f"rollout {rollout.id} of version {version} started")
        audit.record_event(self.workspace, self.model, "rollout-start",
                           f"gate passed: {result.gate_reasons[-1] if result.gate_reasons else ''}; {latency_note}",
                           version=version, previous=champion.version, who=WHO,
                           evidence={"metrics": result.metrics, "champion_metrics": result.champion_metrics})
        self.say(f"[rollout] v{version} against champion v{champion.version}: "
                 + " -> ".join(step_label(s) for s in self.spec.rollout.steps) + " -> 100%")
        self._apply_step(rollout)
        return rollout

    def _retrain_failed(self, trigger, exc: BaseException) -> None:
        what = one_line(exc)
        now = self.clock()
        base = max(RETRY_MIN_S, self.spec.triggers.debounce_s)
        self.store.finish_trigger(trigger.id, "failed", what)
        r = self.store.record_failure(self.model, cause_key(trigger.kind, trigger.cause), trigger.kind, trigger.cause,
                                      what, now=now, base_s=base, cap_s=max(base, RETRY_CAP_S))
        when = time.strftime("%H:%M:%S", time.localtime(r.next_try))
        self.say(f"[retrain] failed ({r.failures} in a row for this cause): {what}; "
                 f"next try in {r.next_try - now:.0f} s (at {when}); 'loopml retrain' tries now")
        try:
            audit.record_event(self.workspace, self.model, "retrain-failed", what, who=WHO, alias="trigger",
                               evidence={"trigger": trigger.id, "failures": r.failures, "next_try": r.next_try})
        except Exception:  # noqa: BLE001 - the failure is in state.db; the audit line is for people
            pass

    def _train_and_gate(self, trigger):
        """(version, champion, result, latency note) of a challenger to roll out, or None when the
        trigger is finished here (already champion, blocked, rejected, or a first version promoted)."""
        from loopml.loop.pipeline import run_pipeline
        from loopml.loop.training_window import retrain_frame

        from threadpoolctl import threadpool_limits

        self.say(f"[retrain] trigger {trigger.id} ({trigger.kind}): training on the retraining window")
        frame, source = retrain_frame(self.spec, self.project_dir, self.workspace)
        # Leave a core to the server beside us: OpenMP pools that oversubscribe a busy machine
        # spin at their barriers and slow training by orders of magnitude (seen: 1 s -> 100 s).
        with threadpool_limits(max(1, (os.cpu_count() or 2) - 1)):
            result = run_pipeline(self.spec, self.workspace, project_dir=self.project_dir, frame=frame, source=source,
                                  auto_promote=False, reason=f"retrain on {trigger.kind}: {trigger.cause}",
                                  on_step=lambda s, m: self.say(f"[retrain] {s}: {m}"))
        # raises RegistryUnavailable when the registry cannot be asked: None means *no champion*
        champion = self.registry.try_resolve(self.model, CHAMPION)
        version = result.version
        if champion is not None and version == champion.version:
            self.store.finish_trigger(trigger.id, "done", f"version {version} is already champion")
            return None
        ref = self.registry.resolve(self.model, version)
        if ref.blocked:
            self.store.finish_trigger(trigger.id, "done", f"version {version} is blocked ({ref.blocked}); "
                                                          f"'loopml promote {self.model} {version}' by hand unblocks it")
            self.say(f"[retrain] version {version} is blocked ({ref.blocked}): not rolled out; "
                     f"only 'loopml promote {self.model} {version}' by hand unblocks it")
            return None
        prior = ref.tags.get("loopml.rollout")
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
            audit.record_event(self.workspace, self.model, "rollout-rejected",
                               "gate failed: " + " | ".join(result.gate_reasons + [latency_note]), version=version,
                               previous=champion.version if champion else None, who=WHO)
            self.store.finish_trigger(trigger.id, "done", f"version {version} rejected by the gate")
            return None
        if champion is None:
            self.registry.promote(self.model, version, "first version: gate passed, nothing to roll out against")
            self.store.finish_trigger(trigger.id, "done", f"version {version} promoted (no champion before)")
            return None
        return version, champion, result, latency_note

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
        try:
            self.server.set_policy(self.model, policy_for(step, rollout.challenger))
        except ServerRefused as exc:
            if exc.status != 422:
                raise  # unreachable or 5xx: the tick fails and is retried; the rollout waits
            # the server loaded the challenger and it failed its smoke prediction there: it
            # never serves, so the rollout cannot go on (retrying would fail forever)
            from loopml.loop.rollout import StepDecision

            decision = StepDecision(ROLLBACK, [f"the server refused v{rollout.challenger}: {exc}"],
                                    {"step": step_label(step)})
            self._record(rollout, "rollout-rollback", decision)
            rollout = self._transition(rollout, rollout.status, decision, status="rolling_back")
            self.say(f"[rollout] ROLLBACK at {step_label(step)}: the server refused v{rollout.challenger}: {exc}")
            self._finish_rollback(rollout)
            return
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
        step = steps[min(rollout.step, len(steps) - 1)]  # an edited spec may have fewer steps now
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
        audit.record_event(self.workspace, self.model, action, why, version=rollout.challenger,
                           previous=rollout.champion, who=WHO, evidence=decision.evidence)
        self._tag(rollout.challenger, f"loopml.rollout.{rollout.id}.step{rollout.step + 1}",
                  f"{decision.action}: {why}"[:4900])

    def _finish_promotion(self, rollout: Rollout) -> None:
        try:  # the registry loads the version and predicts on its input example before moving the alias
            self.registry.ensure_alias(self.model, CHAMPION, rollout.challenger,
                                       f"rollout {rollout.id}: all steps passed ({WHO})")
        except ModelCheckFailed as exc:
            from loopml.loop.rollout import StepDecision

            decision = StepDecision(ROLLBACK, [f"promotion refused: {exc}"], {"step": "promotion"})
            self._record(rollout, "rollout-rollback", decision)
            rollout = self._transition(rollout, "promoting", decision, status="rolling_back")
            self.say(f"[rollout] ROLLBACK at promotion: {exc}")
            return self._finish_rollback(rollout)
        self.server.reload(self.model)  # primary hot-swaps to the new champion, old one drains
        self.server.set_policy(self.model, {"kind": "single"})
        self._tag(rollout.challenger, "loopml.rollout", "promoted")
        self.store.update_rollout(rollout, status="promoted")
        self.say(f"[rollout] v{rollout.challenger} promoted: serving 100%")

    def _finish_rollback(self, rollout: Rollout) -> None:
        self.server.set_policy(self.model, {"kind": "single"})
        self._tag(rollout.challenger, "loopml.rollout", "rolled_back")
        last = rollout.decisions[-1].get("reasons", []) if rollout.decisions else []
        why = f"rolled back by rollout {rollout.id}" + (f": {'; '.join(last)}" if last else "")
        # not a tag for people: a blocked version is never rolled out automatically again (a retrain
        # that rebuilds it from the pipeline cache finds it blocked) until promoted by hand
        self.registry.block(self.model, rollout.challenger, why[:4000])
        self.store.update_rollout(rollout, status="rolled_back")
        self.say(f"[rollout] v{rollout.challenger} rolled back and blocked; v{rollout.champion} serves 100%")

    def _tag(self, version: str, key: str, value: str) -> None:
        try:
            self.registry.client.set_model_version_tag(self.model, version, key, value)
        except Exception:  # noqa: BLE001 - a tag is evidence for people; the audit log is the record
            pass

    def _resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.project_dir / p
