"""Kopf handlers of TrainingJob: backend discovery, children, gang admission, status.

- create/resume: discovery asks the API server whether it serves KubeRay (``ray.io/v1``)
  and Kueue (``kueue.x-k8s.io/v1beta1``); the children (``children.py``) are created
  suspended, never re-patched (a resumed operator must not suspend an admitted job again).
- With Kueue and ``spec.queue``, the child carries the queue label and Kueue admits it; the
  operator only reports what Kueue did.
- Otherwise the operator's gang admission decides: one loop over the watched namespaces
  feeds ``scheduling.admit()`` with the nodes' allocatable resources, the admitted jobs
  (their placement kept in the ``loopml.dev/placement`` annotation), the waiting ones and
  the namespaces' ResourceQuota objects (hard ``requests.cpu``/``cpu``, ``requests.memory``/
  ``memory``, ``requests.nvidia.com/gpu``); admitted jobs are unsuspended (status Admitted),
  preempted ones suspended again (status Preempted).
- The child's status gives the phase (Running, Succeeded, Failed); on success the injectable
  ``register_model`` hook makes the trained version the ``registerAs`` alias and the
  version lands in ``status.modelVersion``.
"""

from __future__ import annotations

import threading
from typing import Any

import kopf

from loopml.operator import children, scheduling
from loopml.operator.demand import child_phase, demand, namespace_quotas, node_capacity
from loopml.operator.conditions import condition, find, now, set_many
from loopml.operator.kube import KubeError

GROUP, VERSION, PLURAL = children.GROUP, children.VERSION, "trainingjobs"
PLACEMENT = "loopml.dev/placement"
KUBERAY, KUEUE = "ray.io/v1", "kueue.x-k8s.io/v1beta1"
WAITING, ADMITTED, FINISHED = ("Pending", "Queued", "Preempted"), ("Admitted", "Running"), ("Succeeded", "Failed")


class TrainingJobHandlers:
    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self._served: dict[str, tuple[float, bool]] = {}
        self._wake = threading.Event()
        self._cycle_lock = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def serves(self, group_version: str) -> bool:
        """Discovery, remembered for ``discovery_ttl`` seconds: KubeRay or Kueue installed
        while the operator runs is seen by the next jobs."""
        import time

        at, served = self._served.get(group_version, (float("-inf"), False))
        if time.monotonic() - at >= self.cfg.discovery_ttl:
            served = self.cfg.kube.serves(group_version)
            self._served[group_version] = (time.monotonic(), served)
        return served

    def uses_kueue(self, body: dict) -> bool:
        return bool(body["spec"].get("queue")) and self.serves(KUEUE)

    def child_kind(self, body: dict) -> str:
        return "RayJob" if (body.get("status") or {}).get("backend") == "rayjob" else "Job"

    def _status(self, body: dict, phase: str, *conds: dict, **extra: Any) -> None:
        """Write the phase and conditions over the fresh status, under the object's lock: the
        admission loop and the child watcher both write it. A finished job stays finished."""
        meta = body["metadata"]
        with self._lock(meta["namespace"], meta["name"]):
            fresh = self.cfg.kube.get("TrainingJob", meta["namespace"], meta["name"])
            if fresh is None:
                return
            st = fresh.get("status") or {}
            if st.get("phase") in FINISHED and phase not in FINISHED:
                return
            new = {"phase": phase, "observedGeneration": int(meta.get("generation") or 0),
                   "conditions": set_many(st.get("conditions"), *conds), **extra}
            if not all(st.get(k) == v for k, v in new.items()):
                self.cfg.kube.patch("TrainingJob", meta["namespace"], meta["name"], {"status": new},
                                    subresource="status")
            body["status"] = {**st, **new}

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def event(self, body: dict, type_: str, reason: str, message: str) -> None:
        """An Event on the CR, posted directly (the admission loop runs outside Kopf's handlers)."""
        meta = body["metadata"]
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
              "involvedObject": {"apiVersion": children.API_VERSION, "kind": "TrainingJob", "name": meta["name"],
                                 "namespace": meta["namespace"], "uid": meta.get("uid")},
              "type": type_, "reason": reason, "message": message[:1000], "source": {"component": "loopml-operator"},
              "firstTimestamp": now(), "lastTimestamp": now(), "count": 1}
        try:
            self.cfg.kube.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=ev)
        except KubeError:
            pass  # an event is a courtesy; the status holds the decision

    # -- create -----------------------------------------------------------------------------
    def create(self, body: dict, logger: Any) -> None:
        kuberay, kueue = self.serves(KUBERAY), self.uses_kueue(body)
        for child in children.trainingjob_children(body, kuberay=kuberay, kueue=kueue, settings=self.cfg.settings):
            try:
                self.cfg.kube.create(child)
            except KubeError as e:
                if e.status != 409:
                    raise
        gen = int(body["metadata"].get("generation") or 0)
        if not (body.get("status") or {}).get("phase"):
            why = (f"waiting for Kueue (LocalQueue {body['spec']['queue']})" if kueue
                   else "waiting for gang admission")
            self._status(body, "Queued", condition("Admitted", False, "Queued", why, gen),
                         backend="rayjob" if kuberay else "indexed-job")
        self._wake.set()

    # -- the child's progress -----------------------------------------------------------------
    def child_changed(self, child: dict, logger: Any) -> None:
        meta = child["metadata"]
        owner = meta.get("labels", {}).get(children.OWNER_LABEL)
        body = self.cfg.kube.get("TrainingJob", meta["namespace"], owner) if owner else None
        if body is None:
            return
        st = body.get("status") or {}
        gen = int(body["metadata"].get("generation") or 0)
        phase = child_phase(child)
        if st.get("phase") in FINISHED:
            return
        if phase == "Succeeded":
            alias = body["spec"].get("registerAs", "challenger")
            try:
                version = self.cfg.register_model(body) if self.cfg.register_model else None
                done = f"registered version {version} as {alias}" if version else "training finished"
            except Exception as e:  # noqa: BLE001 - the job did finish; say what failed, once
                version, done = None, f"training finished; pointing {alias} at its version failed: {e}"
                self.event(body, "Warning", "RegistrationFailed", done)
            self._status(body, "Succeeded", condition("Succeeded", True, "Completed", done[:900], gen),
                         condition("Running", False, "Completed", "training finished", gen),
                         **({"modelVersion": str(version)} if version else {}))
            self.event(body, "Normal", "Succeeded", done)
        elif phase == "Failed":
            self._status(body, "Failed", condition("Failed", True, "ChildFailed", f"the {child['kind']} failed", gen),
                         condition("Running", False, "ChildFailed", f"the {child['kind']} failed", gen))
        elif phase == "Running" and st.get("phase") != "Running":
            self._status(body, "Running", condition("Running", True, "WorkersRunning", "workers running", gen))
        elif (self.uses_kueue(body) and st.get("phase") in WAITING
              and not (child.get("spec") or {}).get("suspend")):  # Kueue admitted it
            self._status(body, "Admitted", condition("Admitted", True, "AdmittedByKueue", "Kueue admitted the job", gen),
                         admittedAt=now())

    # -- gang admission -----------------------------------------------------------------------
    def _suspend(self, body: dict, suspend: bool) -> None:
        meta = body["metadata"]
        self.cfg.kube.patch(self.child_kind(body), meta["namespace"], meta["name"], {"spec": {"suspend": suspend}})

    def _list(self, kind: str) -> list[dict]:
        if not self.cfg.namespaces:
            return self.cfg.kube.list(kind)
        return [o for ns in self.cfg.namespaces for o in self.cfg.kube.list(kind, ns)]

    def admission_cycle(self) -> scheduling.Decision | None:
        with self._cycle_lock:
            jobs = [j for j in self._list("TrainingJob") if (j.get("status") or {}).get("backend")
                    and not self.uses_kueue(j) and not j["metadata"].get("deletionTimestamp")]
            if not jobs:
                return None
            by_key = {f"{j['metadata']['namespace']}/{j['metadata']['name']}": j for j in jobs}
            running, queue = [], []
            for key, j in by_key.items():
                phase = j["status"].get("phase")
                placed = (j["metadata"].get("annotations") or {}).get(PLACEMENT)
                if phase in ADMITTED and placed is not None:
                    running.append((demand(j), scheduling.Placement(key, tuple(placed.split(",")))))
                elif phase in WAITING:
                    queue.append(demand(j))
            if not queue:
                return None
            nodes = [n for n in map(node_capacity, self.cfg.kube.list("Node")) if n is not None]
            decision = scheduling.admit(nodes, running, queue, namespace_quotas(self._list("ResourceQuota")))
            for key in decision.preempted:
                self._preempt(by_key[key])
            for placement in decision.admitted:
                self._admit(by_key[placement.job], placement)
            for key in decision.waiting:
                self._wait(by_key[key], decision.reasons.get(key, "waiting for room"))
            return decision

    def _preempt(self, body: dict) -> None:
        meta = body["metadata"]
        gen = int(meta.get("generation") or 0)
        why = "preempted by a job of higher priority"
        self._suspend(body, True)
        self.cfg.kube.patch("TrainingJob", meta["namespace"], meta["name"], {"metadata": {"annotations": {PLACEMENT: None}}})
        self._status(body, "Preempted", condition("Preempted", True, "HigherPriority", why, gen),
                     condition("Admitted", False, "Preempted", why, gen), condition("Running", False, "Preempted", why, gen))
        self.event(body, "Warning", "Preempted", why)

    def _admit(self, body: dict, placement: scheduling.Placement) -> None:
        meta = body["metadata"]
        gen = int(meta.get("generation") or 0)
        where = ",".join(placement.nodes)
        self.cfg.kube.patch("TrainingJob", meta["namespace"], meta["name"], {"metadata": {"annotations": {PLACEMENT: where}}})
        self._suspend(body, False)
        conds = [condition("Admitted", True, "GangAdmitted", f"{len(placement.nodes)} workers on {where}", gen)]
        if find((body.get("status") or {}).get("conditions"), "Preempted"):
            conds.append(condition("Preempted", False, "Readmitted", "admitted again", gen))
        self._status(body, "Admitted", *conds, admittedAt=now())
        self.event(body, "Normal", "Admitted", f"all {len(placement.nodes)} workers admitted on {where}")

    def _wait(self, body: dict, why: str) -> None:
        st = body.get("status") or {}
        meta = body["metadata"]
        gen = int(meta.get("generation") or 0)
        if (meta.get("annotations") or {}).get(PLACEMENT) is not None:
            # an admission cut short (placed, maybe unsuspended, status never written): undo it,
            # or the job would run while the scheduler counts it as waiting
            self._suspend(body, True)
            self.cfg.kube.patch("TrainingJob", meta["namespace"], meta["name"],
                                {"metadata": {"annotations": {PLACEMENT: None}}})
        phase = st.get("phase") if st.get("phase") in WAITING else "Queued"
        self._status(body, phase, condition("Admitted", False, "Waiting", why[:900], gen))

    def admission_loop(self, stop: threading.Event, logger: Any) -> None:
        while not stop.is_set():
            try:
                self.admission_cycle()
            except Exception as e:  # noqa: BLE001 - one failed cycle (API hiccup) must not end admission
                logger.warning(f"gang admission cycle failed: {e}")
            self._wake.wait(self.cfg.admission_interval)
            self._wake.clear()


def register(registry: kopf.OperatorRegistry, cfg: Any) -> TrainingJobHandlers:
    h = TrainingJobHandlers(cfg)
    res = (GROUP, VERSION, PLURAL)
    stop = threading.Event()

    @kopf.on.resume(*res, id="children-resume", registry=registry)
    @kopf.on.create(*res, id="children", registry=registry)
    def tj_create(body, logger, **_):
        h.create(dict(body), logger)

    for group_version, plural in (("batch/v1", "jobs"), (KUBERAY, "rayjobs")):
        group, version = group_version.split("/")

        @kopf.on.event(group, version, plural, labels={children.OWNER_LABEL: kopf.PRESENT}, id="child-status",
                        registry=registry)
        def tj_child(body, type, logger, **_):
            if type in ("ADDED", "MODIFIED", None):
                h.child_changed(dict(body), logger)

    @kopf.on.startup(id="admission-start", registry=registry)
    async def tj_admission_start(logger, **_):
        import asyncio

        stop.clear()
        asyncio.get_running_loop().run_in_executor(None, h.admission_loop, stop, logger)

    @kopf.on.cleanup(id="admission-stop", registry=registry)
    async def tj_admission_stop(**_):
        stop.set()
        h._wake.set()

    return h
