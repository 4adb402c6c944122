"""Shared pieces of the operator tests: the fake cluster's resources and CRD validation, a
Prometheus-format page, and ``wait_for``. Each test module starts one fake API server and one
operator (both in threads of their own) in a module-scoped fixture.

The operator logs in through an explicit kubeconfig naming the fake API server; rollout
evidence comes from a real HTTP page in Prometheus text format that the tests rewrite (the
counters a server's /metrics or Prometheus' /federate would show); traffic policies go where
``loopml serve`` replicas read them (a PostgreSQL state store, or a workspace).
"""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.operator.fake_apiserver import FakeApiServer, FakeCluster

RESOURCES = [  # (group/version, plural, kind, namespaced, status subresource)
    ("loopml.dev/v1", "modeldeployments", "ModelDeployment", True, True),
    ("loopml.dev/v1", "trainingjobs", "TrainingJob", True, True),
    ("apps/v1", "deployments", "Deployment", True, True),
    ("v1", "services", "Service", True, True),
    ("autoscaling/v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True, True),
    ("batch/v1", "jobs", "Job", True, True),
    ("v1", "nodes", "Node", False, True),
    ("v1", "resourcequotas", "ResourceQuota", True, True),
    ("v1", "events", "Event", True, False),
    # what Kopf's own scanning watches: namespaces and CRDs (a CRD appearing = a new resource)
    ("v1", "namespaces", "Namespace", False, True),
    ("apiextensions.k8s.io/v1", "customresourcedefinitions", "CustomResourceDefinition", False, True),
]


def crd_validator(kind: str) -> Callable[[dict], str | None]:
    """The first error of a whole CR against K1's CRD schema (loopml.deploy.crds, unknown fields
    refused) and its CEL rules, as the API server's 422: samples, the operator's status writes,
    every patch."""
    import jsonschema

    from loopml.deploy import crds

    from tests.deploy.cel_rules import failures  # K1's evaluation of the CRD's own CEL rules

    validator = jsonschema.Draft202012Validator(crds.object_schema(kind))

    def check(obj: dict) -> str | None:
        err = next(iter(sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))), None)
        if err:
            return f"{kind} {'.'.join(map(str, err.absolute_path))}: {err.message}"
        cel = failures(crds.KINDS[kind]["spec"](), obj.get("spec") or {})
        return f"{kind} spec: {cel[0]}" if cel else None
    return check


def declare_all(api: FakeApiServer, extra: list[tuple] = ()) -> None:
    for gv, plural, kind, namespaced, status in [*RESOURCES, *extra]:
        api.declare(gv, plural, kind, namespaced=namespaced, status=status)
    api.validators.update(modeldeployments=crd_validator("ModelDeployment"),
                          trainingjobs=crd_validator("TrainingJob"))
    api.namespaces[:] = ["default", "ml", "team-a", "team-b"]


class MetricsPage:
    """A real HTTP page in Prometheus text format on 127.0.0.1 whose text the test sets."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str, str, int], float] = {}  # (model, version, variant, status) -> count
        page = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = page.text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def text(self) -> str:
        lines = ["# HELP loopml_requests_total Requests answered.", "# TYPE loopml_requests_total counter"]
        for (model, version, variant, status), n in sorted(self.series.items()):
            lines.append(f'loopml_requests_total{{model="{model}",version="{version}",variant="{variant}",'
                         f'status="{status}"}} {n}')
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(fn: Callable[[], Any], what: str, timeout_s: float = 20.0, extra: Callable[[], Any] | None = None) -> Any:
    """Poll until ``fn()`` is truthy (the operator works asynchronously); its value."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as e:  # noqa: BLE001 - the object may not exist yet
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}; {extra() if extra else ''}")


@pytest.fixture(scope="module")
def metrics_page():
    page = MetricsPage()
    yield page
    page.close()


def start_cluster(folder: Path, extra: list[tuple] = ()) -> FakeCluster:
    return FakeCluster(folder, lambda api: declare_all(api, extra)).start()
