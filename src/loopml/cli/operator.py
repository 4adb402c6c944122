"""``loopml operator``: the Kopf operator for ModelDeployment and TrainingJob (issue #13).

Runs in-process and standalone (one replica, no peering). Where it writes traffic policies
is where ``loopml serve`` replicas read them: the workspace (``--home``) or the PostgreSQL
state store (``LOOPML_STATE_URI``). Rollouts are driven only with an evidence source
(``--prometheus-url``, Prometheus' ``/federate`` or any page in Prometheus text format).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from loopml.cli.common import HomeOpt, TrackingOpt, workspace


def operator(
    namespace: Annotated[Optional[list[str]], typer.Option("--namespace", "-n", help="Namespace to serve "
                                                           "(repeatable).")] = None,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A", help="Serve every namespace.")] = False,
    kubeconfig: Annotated[Optional[Path], typer.Option("--kubeconfig", help="Kubeconfig file (default: the pod's "
                                                       "service account, else $KUBECONFIG or ~/.kube/config).")] = None,
    prometheus_url: Annotated[Optional[str], typer.Option("--prometheus-url", help="Rollout evidence: Prometheus' "
                                                          "/federate URL, or a page in Prometheus text format.")] = None,
    image: Annotated[Optional[str], typer.Option("--image", help="Default server image of ModelDeployments.")] = None,
    secret: Annotated[Optional[str], typer.Option("--secret", help="Secret the server pods read credentials from, "
                                                  "by reference (default: loopml-secrets).")] = None,
    project_config_map: Annotated[Optional[str], typer.Option("--project-config-map", help="ConfigMap holding the "
                                                              "project's loopml.yaml, mounted into server pods.")] = None,
    rollout_interval: Annotated[float, typer.Option("--rollout-interval", min=0.1, help="Seconds between "
                                                    "rollout decisions.")] = 30.0,
    admission_interval: Annotated[float, typer.Option("--admission-interval", min=0.1, help="Seconds between gang "
                                                      "admission cycles.")] = 10.0,
    liveness: Annotated[Optional[str], typer.Option("--liveness", help="Liveness endpoint, e.g. "
                                                    "http://127.0.0.1:8080/healthz.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug log lines (every request).")] = False,
    home: HomeOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Run the operator: children, status, rollouts of ModelDeployments; gang admission of TrainingJobs."""
    import asyncio

    if bool(namespace) == all_namespaces:
        raise typer.BadParameter("give --namespace NS (repeatable) or --all-namespaces, one of the two")
    if kubeconfig is not None and not kubeconfig.is_file():
        raise typer.BadParameter(f"{kubeconfig} is not a file; give the kubeconfig of the cluster to operate on",
                                 param_hint="--kubeconfig")
    from loopml.operator.app import OperatorConfig, operate
    from loopml.operator.evidence import PrometheusEvidence
    from loopml.operator.hooks import RegistryHooks
    from loopml.operator.kube import Kube
    from loopml.serve.policy_store import PolicyFiles

    ws = workspace(home, tracking_uri)
    kube = Kube(str(kubeconfig) if kubeconfig else None)
    hooks = RegistryHooks(ws, kube)
    state = ws.state_uri
    cfg = OperatorConfig(kube=kube, policies=PolicyFiles(ws.home, state), namespaces=tuple(namespace or ()),
                         settings={k: v for k, v in (("image", image), ("secret", secret),
                                                     ("projectConfigMap", project_config_map)) if v},
                         evidence=PrometheusEvidence(prometheus_url) if prometheus_url else None,
                         promote=hooks.promote, register_model=hooks.register_model,
                         rollout_interval=rollout_interval, admission_interval=admission_interval)
    if cfg.evidence is None:
        typer.echo("no --prometheus-url: ModelDeployment rollouts are not driven (children and traffic only)", err=True)
    import kopf

    kopf.configure(verbose=verbose)  # Kopf's own log lines on stderr, as `kopf run` prints them
    asyncio.run(operate(cfg, clusterwide=all_namespaces, liveness=liveness))
