"""Kopf handlers of ModelDeployment: children, status, finalizer clean-up and the rollout.

- create/update/resume: the Deployment, Service and HPA (``children.py``) are created or
  merge-patched to the spec; status says the generation seen, replicas and Ready.
- the child Deployment's status (its replicas becoming ready) flows back to the CR.
- delete (finalizer ``loopml.dev/finalizer``): what lives outside the cluster is cleaned up:
  the model's traffic policy returns to ``single`` in the shared policy store (the servers of
  the model stop splitting traffic) and the rollout's evidence baselines are forgotten. The
  children go with the CR through their owner references.
- a timer drives ``spec.rollout`` with loopml's own decision (``loop.rollout.decide_step``):
  each step's traffic policy is written where ``loopml serve`` replicas read policies
  (``serve.policy_store.PolicyFiles``: the workspace's files, or the PostgreSQL store's
  ``policies`` table), and every advance, promotion or rollback is an Event and a condition.
  Holding (not enough evidence yet) updates the Progressing message only; a step held longer
  than ``step_timeout_s`` turns Progressing False (StepTimeout, one Warning) and is still
  decided when its evidence arrives.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import kopf

from loopml.loop.rollout import ADVANCE, ROLLBACK, decide_step, policy_for
from loopml.operator import children
from loopml.operator.conditions import condition, find, set_many
from loopml.operator.evidence import EvidenceQuery
from loopml.serve.traffic import parse_policy
from loopml.spec import RolloutSpec

GROUP, VERSION, PLURAL = children.GROUP, children.VERSION, "modeldeployments"
FINAL = ("Promoted", "RolledBack")
STEP_STARTED = "loopml.dev/step-started"  # epoch seconds: the status schema has no field for it


def rollout_spec(spec: dict) -> RolloutSpec | None:
    r = spec.get("rollout")
    if not r:
        return None
    return RolloutSpec.model_validate({k: v for k, v in r.items() if k != "challenger"})


def challenger_ref(spec: dict) -> str:
    c = (spec.get("rollout") or {}).get("challenger") or {}
    return str(c.get("version") or c.get("alias") or "challenger")


def manual_policy(spec: dict) -> dict:
    w = float((spec.get("traffic") or {}).get("challengerWeight", 0.0) or 0.0)
    return {"kind": "canary", "weight": w, "challenger": "challenger"} if w > 0 else {"kind": "single"}


def _gen(body: Any) -> int:
    return int(body["metadata"].get("generation") or 0)


def _replica_status(body: Any, deployment: dict | None) -> tuple[dict, dict]:
    st = (deployment or {}).get("status") or {}
    want = int((body["spec"].get("replicas") or {}).get("min", 1))
    ready = int(st.get("readyReplicas") or 0)
    c = condition("Ready", ready >= want, "MinimumReplicasAvailable" if ready >= want else "MinimumReplicasUnavailable",
                  f"{ready}/{want} server replicas ready", _gen(body))
    return {"replicas": int(st.get("replicas") or 0), "readyReplicas": ready}, c


class ModelDeploymentHandlers:
    """The handlers, bound to one operator's configuration (``app.OperatorConfig``).

    Three writers share a CR's status (reconcile, the rollout timer, the child Deployment's
    watcher) and conditions are one list, so every status write is a read-modify-write of the
    fresh object under a per-object lock: no writer drops another's condition."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def write_status(self, namespace: str, name: str, *conds: dict, **fields: Any) -> dict | None:
        """Merge ``fields`` and ``conds`` into the fresh status (caller holds the lock)."""
        fresh = self.cfg.kube.get("ModelDeployment", namespace, name)
        if fresh is None:
            return None
        st = fresh.get("status") or {}
        new = dict(fields)
        if conds:
            new["conditions"] = set_many(st.get("conditions"), *conds)
        if any(st.get(k) != v for k, v in new.items()):
            return self.cfg.kube.patch("ModelDeployment", namespace, name, {"status": new}, subresource="status")
        return fresh

    # -- traffic ----------------------------------------------------------------------------
    def save_policy(self, model: str, policy: dict) -> None:
        self.cfg.policies.save(model, parse_policy(policy))

    # -- reconcile --------------------------------------------------------------------------
    def reconcile(self, body: Any, logger: Any, reset_rollout: bool = False) -> None:
        cfg = self.cfg
        for child in children.modeldeployment_children(dict(body), cfg.settings):
            cfg.kube.ensure(child)
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        dep = cfg.kube.get("Deployment", ns, f"{name}-server")
        counts, ready = _replica_status(body, dep)
        with self.lock(ns, name):
            fresh = cfg.kube.get("ModelDeployment", ns, name) or dict(body)
            conds = [ready]
            ro = dict((fresh.get("status") or {}).get("rollout") or {})
            if reset_rollout or not ro:
                ro = {"step": 0, "weight": 0.0, "phase": "Idle"}
                conds.append(condition("Progressing", False, "Idle", "no rollout in progress", _gen(body)))
                for done in ("RolledBack", "Promoted"):  # the outcome of the previous rollout is history
                    if find((fresh.get("status") or {}).get("conditions"), done):
                        conds.append(condition(done, False, "NewRollout", "a new rollout section", _gen(body)))
            if not body["spec"].get("rollout") and ro.get("phase") not in ("Shadow", "Canary"):
                policy = manual_policy(body["spec"])
                self.save_policy(body["spec"]["model"]["name"], policy)
                ro["weight"] = float(policy.get("weight", 0.0))
            self.write_status(ns, name, *conds, observedGeneration=_gen(body), rollout=ro,
                              url=f"http://{name}.{ns}.svc:8080", **counts)

    def deployment_changed(self, body: Any, logger: Any) -> None:
        """A child Deployment's status changed: copy its replica counts to the owner."""
        meta = body["metadata"]
        owner = meta.get("labels", {}).get(children.OWNER_LABEL)
        if not owner:
            return
        with self.lock(meta["namespace"], owner):
            cr = self.cfg.kube.get("ModelDeployment", meta["namespace"], owner)
            if cr is None:
                return
            counts, ready = _replica_status(cr, dict(body))
            self.write_status(meta["namespace"], owner, ready, **counts)

    def cleanup(self, body: Any, logger: Any) -> None:
        model = body["spec"]["model"]["name"]
        self.save_policy(model, {"kind": "single"})
        forget = getattr(self.cfg.evidence, "forget", None)
        if forget:
            forget(body["metadata"]["namespace"], body["metadata"]["name"])
        logger.info(f"traffic policy of {model} back to single; rollout state forgotten")

    # -- rollout ----------------------------------------------------------------------------
    def _enter(self, body: dict, rs: RolloutSpec, index: int, reason: str, why: str) -> None:
        spec, meta = body["spec"], body["metadata"]
        step = rs.steps[index]
        model = spec["model"]["name"]
        start = getattr(self.cfg.evidence, "start", None)
        if start:
            start(EvidenceQuery(meta["namespace"], meta["name"], model, index, step))
        self.save_policy(model, policy_for(step, challenger_ref(spec)))
        self.cfg.kube.patch("ModelDeployment", meta["namespace"], meta["name"],
                            {"metadata": {"annotations": {STEP_STARTED: str(time.time())}}})
        label = "shadow" if step.kind == "shadow" else f"canary {step.weight:.0%}"
        message = f"step {index + 1}/{len(rs.steps)}: {label} of {challenger_ref(spec)}" + (f" ({why})" if why else "")
        self.write_status(meta["namespace"], meta["name"],
                          condition("Progressing", True, reason, message[:1000], _gen(body)),
                          rollout={"step": index, "weight": float(step.weight), "phase": step.kind.capitalize()})
        kopf.event(body, type="Normal", reason=reason, message=message[:1000])

    def tick(self, namespace: str, name: str, logger: Any) -> None:
        with self.lock(namespace, name):
            body = self.cfg.kube.get("ModelDeployment", namespace, name)  # fresh: the last tick's write included
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            self._tick(body)

    def _tick(self, body: dict) -> None:
        spec, meta = body["spec"], body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        rs = rollout_spec(spec)
        ro = (body.get("status") or {}).get("rollout") or {}
        phase = ro.get("phase", "Idle")
        if rs is None or phase in FINAL:
            return
        if phase == "Idle":
            return self._enter(body, rs, 0, "RolloutStarted", "")
        index = min(int(ro.get("step", 0)), len(rs.steps) - 1)
        step = rs.steps[index]
        model = spec["model"]["name"]
        ev, shadow_errors = self.cfg.evidence(EvidenceQuery(ns, name, model, index, step))
        d = decide_step(step, rs, ev, shadow_errors)
        why = "; ".join(d.reasons)[:900]
        gen = _gen(body)
        if d.action == ROLLBACK:
            self.save_policy(model, {"kind": "single"})
            self.write_status(ns, name, condition("RolledBack", True, "ThresholdCrossed", why, gen),
                              condition("Progressing", False, "RolledBack", why, gen),
                              rollout={"step": index, "weight": 0.0, "phase": "RolledBack"})
            kopf.event(body, type="Warning", reason="RolledBack", message=why)
        elif d.action == ADVANCE and index + 1 >= len(rs.steps):
            if self.cfg.promote:
                self.cfg.promote(model, challenger_ref(spec))
            self.save_policy(model, {"kind": "single"})  # the promoted version is the champion now
            self.write_status(ns, name, condition("Promoted", True, "AllStepsPassed", why, gen),
                              condition("Progressing", False, "Promoted", why, gen),
                              rollout={"step": index, "weight": 1.0, "phase": "Promoted"})
            kopf.event(body, type="Normal", reason="Promoted", message=why)
        elif d.action == ADVANCE:
            self._enter(body, rs, index + 1, "StepAdvanced", why)
        elif self._timed_out(body, rs):  # as the controller pauses: say so once, keep deciding
            why = f"no decision after {rs.step_timeout_s:.0f} s: {why}"[:900]
            if (find((body.get("status") or {}).get("conditions"), "Progressing") or {}).get("reason") != "StepTimeout":
                kopf.event(body, type="Warning", reason="StepTimeout", message=why)
            self.write_status(ns, name, condition("Progressing", False, "StepTimeout", why, gen))
        else:  # hold: the message says what the step waits for; no event for every tick
            self.write_status(ns, name, condition("Progressing", True, "Waiting", why, gen))

    @staticmethod
    def _timed_out(body: dict, rs: RolloutSpec) -> bool:
        started = (body["metadata"].get("annotations") or {}).get(STEP_STARTED)
        try:
            return started is not None and time.time() - float(started) > rs.step_timeout_s
        except ValueError:
            return False


def register(registry: kopf.OperatorRegistry, cfg: Any) -> ModelDeploymentHandlers:
    h = ModelDeploymentHandlers(cfg)
    res = (GROUP, VERSION, PLURAL)

    @kopf.on.resume(*res, id="reconcile-resume", registry=registry)
    @kopf.on.create(*res, id="reconcile", registry=registry)
    def md_reconcile(body, logger, **_):
        h.reconcile(body, logger)

    @kopf.on.update(*res, field="spec", id="reconcile-update", registry=registry)
    def md_update(body, logger, diff, **_):
        # a new rollout section (another challenger, other steps) starts a new rollout
        changed = any(tuple(d[1])[:1] == ("rollout",) for d in diff)
        h.reconcile(body, logger, reset_rollout=changed)

    @kopf.on.delete(*res, id="cleanup", registry=registry)
    def md_cleanup(body, logger, **_):
        h.cleanup(body, logger)

    # a watching handler: Kopf keeps no state (annotations, finalizers) on the children
    @kopf.on.event("apps", "v1", "deployments", labels={children.OWNER_LABEL: kopf.PRESENT}, id="server-status",
                   registry=registry)
    def md_child_status(body, type, logger, **_):
        if type in ("ADDED", "MODIFIED", None):
            h.deployment_changed(body, logger)

    if cfg.evidence is not None:
        @kopf.timer(*res, interval=cfg.rollout_interval, id="rollout", registry=registry,
                    when=lambda spec, status, **_: bool(spec.get("rollout"))
                    and (status.get("rollout") or {}).get("phase") not in FINAL)
        def md_rollout(namespace, name, logger, **_):
            h.tick(namespace, name, logger)

    return h
