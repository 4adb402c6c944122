"""The fleet: every endpoint of one server process, kept in step with the registry.

:meth:`Fleet.sync` re-resolves an endpoint's refs (alias or version) and, when a ref
now points at another version, hot-swaps: the new version is loaded and warmed in a
thread beside the old one, the endpoint switches to it in one assignment, and the old
deployment is retired in the background once its in-flight requests are done. No
request ever sees a half-loaded model, nor an unchecked one: a version whose smoke prediction
fails (:class:`~loopml.errors.ModelCheckFailed`) is never switched in; the old deployment keeps
serving, ``last_error`` says why, and the version is not loaded again on every poll. A registry
that cannot be asked (:class:`~loopml.errors.RegistryUnavailable`) changes nothing either:
every current deployment, a challenger mid-rollout included, keeps serving. A poll task runs :meth:`sync_all` every
``poll_interval_s``; the admin API calls it on demand.

As one of the workers of ``--workers N`` (:meth:`join_group`), admin changes go through
:meth:`shared_change`: applied here, published to the sibling workers, answered once every one
of them has applied it (see :class:`~loopml.serve.policy_store.SharedEndpoints`).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from loopml.config import Workspace
from loopml.errors import LoopmlError, ModelCheckFailed, ModelNotFound, WorkersLagging
from loopml.serve.endpoint import Deployment, Endpoint
from loopml.serve.placement import decide, time_batch
from loopml.serve.policy_store import PolicyFiles, SharedEndpoints
from loopml.serve.recorder import PredictionRecorder
from loopml.serve.runtime import ModelRuntime
from loopml.serve.settings import EndpointSpec, ServeSettings
from loopml.serve.traffic import TrafficPolicy

log = logging.getLogger("loopml.serve")


class Fleet:
    """Endpoints + registry + prediction recorders. ``__init__`` stores; :meth:`start` loads."""

    def __init__(self, workspace: Workspace, specs: list[EndpointSpec], settings: ServeSettings, *,
                 registry: Any = None, metrics: Any = None) -> None:
        self.workspace = workspace
        self.specs = list(specs)
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.endpoints: dict[str, Endpoint] = {}
        self.recorders: dict[str, PredictionRecorder] = {}
        self.policy_files = PolicyFiles(workspace.home, workspace.state_uri)  # a table on PostgreSQL (#11)
        self._poll_task: asyncio.Task | None = None
        self._retiring: set[asyncio.Task] = set()
        self.started = False
        self.startup_error: BaseException | None = None
        self._broken: dict[tuple[str, str], ModelCheckFailed] = {}  # versions that failed their check
        self.group: SharedEndpoints | None = None  # the sibling workers of --workers N
        self.group_timeout_s = 60.0  # how long an admin change waits for every worker to apply it
        self._group_generation = 0
        self._group_lock = asyncio.Lock()
        self._watch_task: asyncio.Task | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self.registry is None:
            from loopml.registry.client import Registry

            self.registry = Registry(self.workspace)
        for spec in self.specs:
            try:
                await self.add(spec)
            except ModelCheckFailed as e:
                # served but not ready: /v2/health/ready says so, and polling picks up a good version
                ep = self.endpoints.get(spec.name) or Endpoint(spec)
                ep.last_error = str(e)
                self.endpoints[spec.name] = ep
                log.error("%s", e)
        if self.group is not None:
            await self._apply_group(initial=True)  # changes made before this worker started
            self._watch_task = asyncio.get_running_loop().create_task(self._watch_group(), name="loopml-group")
        if self.settings.poll_interval_s > 0:
            self._poll_task = asyncio.get_running_loop().create_task(self._poll(), name="loopml-poll")
        self.started = True

    async def stop(self) -> None:
        """Stop polling, let every deployment finish its requests, flush the prediction log."""
        for task in (self._poll_task, self._watch_task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._poll_task = self._watch_task = None
        for ep in list(self.endpoints.values()):
            for d in ep.deployments():
                await d.retire(self.settings.drain_timeout_s)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        for rec in self.recorders.values():
            await asyncio.to_thread(rec.close)
        self.started = False

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            self.apply_policy_files()
            await self.sync_all(quiet=True)

    def apply_policy_files(self) -> list[str]:
        """Adopt policies another worker (or an earlier run) wrote; one ``stat`` per endpoint.
        The next :meth:`sync` deploys or retires the challenger they need."""
        changed = []
        for name, policy in self.policy_files.changed(list(self.endpoints)).items():
            ep = self.endpoints.get(name)
            if ep is not None and ep.policy != policy:
                ep.policy = policy
                changed.append(name)
                log.info("%s: traffic policy from %s: %s", name, self.policy_files.home, policy.to_dict())
        return changed

    # -- sibling workers (--workers N) ------------------------------------------------------

    def join_group(self, group: SharedEndpoints) -> None:
        """Serve as one worker of ``group``; registered at once, so that an admin change made
        while this worker loads waits for it too."""
        self.group = group
        group.ack(-1)

    @asynccontextmanager
    async def shared_change(self, op: str, name: str | None = None, ref: str | None = None) -> AsyncIterator[None]:
        """Wrap an admin change: the body applies it here; then it is published to the sibling
        workers and this waits until every live one has applied it (WorkersLagging after
        ``group_timeout_s``). The lock keeps this worker's watcher from applying an older
        generation between the change and its publication. A body that raises publishes nothing."""
        if self.group is None:
            yield
            return
        async with self._group_lock:
            yield
            refs = {n: ep.spec.ref for n, ep in self.endpoints.items()}
            generation = await asyncio.to_thread(self.group.publish, op, refs, name, ref)
            self._group_generation = generation
            await asyncio.to_thread(self.group.ack, generation)
        loop = asyncio.get_running_loop()
        end = loop.time() + self.group_timeout_s
        while True:
            applied, total = await asyncio.to_thread(self.group.pending, generation)
            if applied >= total:
                return
            if loop.time() > end:
                raise WorkersLagging(applied, total, self.group_timeout_s)
            await asyncio.sleep(0.02)

    async def _watch_group(self) -> None:
        while True:
            await asyncio.sleep(0.05)  # one stat per tick; admin calls wait for this
            try:
                if self.group.changed():
                    await self._apply_group()
            except Exception as e:  # noqa: BLE001 - a bad file must not end the watcher
                log.warning("applying the workers' shared endpoints failed: %s", e)

    async def _apply_group(self, initial: bool = False) -> None:
        """Bring this worker to the published generation (load, unload, policies, aliases); ack it."""
        async with self._group_lock:
            generation, wanted = await asyncio.to_thread(self.group.read)
            if generation <= self._group_generation and not initial:
                return
            if wanted is not None:
                for name, ref in wanted.items():
                    ep = self.endpoints.get(name)
                    if ep is None or ep.spec.ref != ref:
                        try:
                            await self.add(EndpointSpec(name, ref))
                        except LoopmlError as e:  # the publishing worker loaded it: say why not here
                            log.error("worker: loading %s@%s failed: %s", name, ref, e)
                for name in [n for n in self.endpoints if n not in wanted]:
                    await self.remove(name)
            self.apply_policy_files()
            await self.sync_all(quiet=True)
            self._group_generation = generation
            await asyncio.to_thread(self.group.ack, generation)

    # -- endpoints --------------------------------------------------------------------------

    async def add(self, spec: EndpointSpec) -> Endpoint:
        """Serve a new endpoint (or re-point an existing one at ``spec.ref``)."""
        ep = self.endpoints.get(spec.name)
        if ep is None:
            ep = Endpoint(spec)
            persisted = self.policy_files.changed([spec.name]).get(spec.name)
            if persisted is not None:  # the policy every worker shares, set before this one started
                ep.policy = persisted
        else:
            ep.spec = spec
        if self.settings.log_predictions and spec.name not in self.recorders:
            self.recorders[spec.name] = PredictionRecorder(self.workspace.predictions, spec.name).start()
        await self.sync(ep)
        self.endpoints[spec.name] = ep
        return ep

    async def remove(self, name: str) -> None:
        ep = self.endpoints.pop(name, None)
        if ep is None:
            raise ModelNotFound(name)
        for d in ep.deployments():
            self._retire(d)

    async def set_policy(self, name: str, policy: TrafficPolicy) -> Endpoint:
        """Apply ``policy`` here and persist it for the other workers (see :mod:`.policy_store`)."""
        ep = self.get(name)
        await asyncio.to_thread(self.policy_files.save, name, policy)
        async with ep.lock:
            ep.policy = policy
        await self.sync(ep)
        return ep

    def get(self, name: str) -> Endpoint:
        ep = self.endpoints.get(name)
        if ep is None:
            raise ModelNotFound(name)
        return ep

    @property
    def ready(self) -> bool:
        """Every configured model loaded and checked; a server serving nothing is not ready."""
        return self.started and bool(self.endpoints) and all(ep.ready for ep in self.endpoints.values())

    # -- syncing with the registry ------------------------------------------------------------

    async def sync_all(self, quiet: bool = False) -> dict[str, dict]:
        out = {}
        for ep in list(self.endpoints.values()):
            try:
                await self.sync(ep)
            except LoopmlError as e:
                ep.last_error = str(e)
                if not quiet:
                    raise
            except Exception as e:  # noqa: BLE001 - the registry may be briefly unreachable
                ep.last_error = f"{type(e).__name__}: {e}"
                log.warning("syncing %s failed: %s", ep.name, ep.last_error)
                if not quiet:
                    raise
            out[ep.name] = ep.describe()
        return out

    async def sync(self, ep: Endpoint) -> None:
        """Bring ``ep`` to the versions its refs point at now (hot swap when they moved).

        All or nothing: if a ref cannot be resolved (registry unavailable) or a new version
        fails its check, nothing is switched or retired and ``ep.last_error`` says why."""
        try:
            await self._sync(ep)
        except Exception as e:
            ep.last_error = str(e) if isinstance(e, LoopmlError) else f"{type(e).__name__}: {e}"
            raise

    async def _sync(self, ep: Endpoint) -> None:
        async with ep.lock:
            primary_ref = await asyncio.to_thread(self.registry.resolve, ep.name, ep.spec.ref)
            existing = ep.deployments()
            new_primary = await self._deploy_if_changed(existing, primary_ref)
            challenger_ref = None
            if ep.policy.needs_challenger:
                try:
                    challenger_ref = await asyncio.to_thread(self.registry.resolve, ep.name, ep.policy.challenger)
                except ModelNotFound:
                    challenger_ref = None  # no challenger: the policy falls back to the primary
            new_challenger = None
            if challenger_ref is not None and str(challenger_ref.version) != new_primary.version:
                rest = [d for d in existing if d is not new_primary]
                new_challenger = await self._deploy_if_changed(rest, challenger_ref)
            old = [d for d in existing if d is not new_primary and d is not new_challenger]
            new_primary.label = ep.primary_label
            # With a challenger (canary or shadow), both variants predict in their own threads:
            # a slow challenger never blocks the event loop the champion answers on, and the
            # two are timed alike, so the rollout's latency comparison is fair. Else
            # serving.predict_in_thread decides (see serve/placement.py).
            self._place(new_primary, new_challenger is not None)
            if new_challenger is not None:
                new_challenger.label = ep.challenger_label
                self._place(new_challenger, True)
            ep.primary, ep.challenger = new_primary, new_challenger  # the switch
            ep.last_error = None
        for d in old:
            self._retire(d)

    async def _deploy_if_changed(self, candidates: list[Deployment], ref: Any) -> Deployment:
        """A running deployment of ``ref``'s version, or a new one loaded and warmed."""
        for d in candidates:
            if d.version == str(ref.version) and not d.retired:
                return d
        known = self._broken.get((ref.name, str(ref.version)))
        if known is not None:
            raise known  # checked and failed already: do not load it again on every poll
        runtime = ModelRuntime(self.registry, ref, predict_in_thread=False,  # placed by _sync
                               use_compiled=self.settings.compiled, runtime=self.settings.runtime)
        try:
            await asyncio.to_thread(runtime.load)
        except ModelCheckFailed as e:
            self._broken[(ref.name, str(ref.version))] = e
            log.error("%s", e)
            await asyncio.to_thread(runtime.close)
            raise
        if self.metrics is not None:
            self.metrics.model_loaded(runtime.name, runtime.version, runtime.load_seconds or 0.0)
        log.info("loaded %s version %s in %.2fs", runtime.name, runtime.version, runtime.load_seconds)
        rows, seconds = await asyncio.to_thread(time_batch, runtime, self.settings.max_batch_size)
        dep = Deployment(runtime, self.settings, label="", recorder=self.recorders.get(runtime.name),
                         on_batch=self.metrics.batch if self.metrics is not None else None)
        dep.batch_rows, dep.batch_seconds = rows, seconds
        return dep

    def _place(self, d: Deployment, challenger: bool) -> None:
        in_thread, why = decide(self.settings.predict_in_thread, d.batch_rows, d.batch_seconds, challenger)
        if in_thread != d.runtime.predict_in_thread or why != d.placement_reason:
            log.info("%s version %s predicts %s (%s)", d.name, d.version,
                     "in a thread" if in_thread else "on the event loop", why)
        d.runtime.predict_in_thread, d.placement_reason = in_thread, why

    def _retire(self, d: Deployment) -> None:
        task = asyncio.get_running_loop().create_task(d.retire(self.settings.drain_timeout_s))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
