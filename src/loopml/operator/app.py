"""One operator: its configuration, its Kopf registry and settings, and ``run()``.

Everything a handler needs from outside arrives through :class:`OperatorConfig` (the API
client, where traffic policies go, where rollout evidence comes from, what promotes and what
registers a model), so tests inject a fake API server, a Prometheus-format page and recording
hooks while ``loopml operator`` wires the real ones.

Kopf keeps its handler progress and last-handled spec in annotations under ``loopml.dev``
(never in ``status``: the CRDs' structural schemas would prune unknown status fields), and
its finalizer is ``loopml.dev/finalizer``, the one the CRD contract names.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import kopf

from loopml.operator import modeldeployment, trainingjob
from loopml.operator.children import FINALIZER, GROUP
from loopml.operator.kube import Kube


@dataclass
class OperatorConfig:
    kube: Kube
    policies: Any  # .save(model, TrafficPolicy): serve.policy_store.PolicyFiles
    namespaces: tuple[str, ...] = ()  # () = every namespace
    settings: dict = field(default_factory=dict)  # image, projectConfigMap, secret of server pods
    evidence: Any = None  # EvidenceQuery -> (Evidence, shadow_errors); None: rollouts are not driven
    promote: Callable[[str, str], None] | None = None  # (model, challenger ref) after the last step
    register_model: Callable[[dict], str | None] | None = None  # finished TrainingJob -> version
    rollout_interval: float = 30.0
    admission_interval: float = 10.0
    discovery_ttl: float = 60.0


def build_registry(cfg: OperatorConfig) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """An explicit kubeconfig: the same credentials as the operator's own client. Otherwise
        Kopf's login through the official client, which re-reads the pod's service-account
        token on every (re-)login: bound tokens rotate."""
        if not cfg.kube.kubeconfig:
            return kopf.login_via_client(**kwargs)
        c = cfg.kube.client().configuration
        token = (c.api_key or {}).get("authorization", "") or (c.api_key or {}).get("BearerToken", "")
        token = token.split(" ", 1)[1] if token.lower().startswith("bearer ") else token
        return kopf.ConnectionInfo(server=c.host, token=token or None, ca_path=c.ssl_ca_cert,
                                   insecure=not c.verify_ssl, certificate_path=c.cert_file,
                                   private_key_path=c.key_file)

    modeldeployment.register(registry, cfg)
    trainingjob.register(registry, cfg)
    return registry


def build_settings() -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
    s.persistence.finalizer = FINALIZER
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    s.posting.reporting_component = "loopml-operator"
    s.watching.server_timeout = 300  # re-list now and then: a missed watch event heals
    s.peering.standalone = True  # one replica (a Deployment with strategy Recreate), no peering CRDs
    return s


async def operate(cfg: OperatorConfig, *, clusterwide: bool = False, liveness: str | None = None,
                  stop_flag: Any = None, ready_flag: Any = None) -> None:
    await kopf.operator(registry=build_registry(cfg), settings=build_settings(), standalone=True,
                        clusterwide=clusterwide, namespaces=list(cfg.namespaces), liveness_endpoint=liveness,
                        stop_flag=stop_flag, ready_flag=ready_flag)


class OperatorThread:
    """The operator in a thread of its own (tests; anything embedding it): ``start()`` returns
    once Kopf is ready, ``stop()`` asks it to finish and waits."""

    def __init__(self, cfg: OperatorConfig, clusterwide: bool = False) -> None:
        self.cfg = cfg
        self.clusterwide = clusterwide
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self, timeout_s: float = 30.0) -> "OperatorThread":
        def main() -> None:
            try:
                asyncio.run(operate(self.cfg, clusterwide=self.clusterwide, stop_flag=self._stop,
                                    ready_flag=self._ready))
            except BaseException as e:  # noqa: BLE001 - reported by start()/stop()
                self.error = e
                self._ready.set()

        self._thread = threading.Thread(target=main, name="loopml-operator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or self.error:
            raise RuntimeError(f"the operator did not start: {self.error!r}")
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout_s)
