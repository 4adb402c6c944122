"""The controller's Alertmanager webhook: a firing loopml drift alert becomes a retraining trigger.

``loopml up`` listens on ``127.0.0.1:PORT`` (``retrain.webhook_port`` in loopml.yaml, or
``LOOPML_WEBHOOK_PORT``; off when neither is set; ``LOOPML_WEBHOOK_HOST`` to bind elsewhere)
for ``POST /alerts`` with Alertmanager's webhook payload (version 4)::

    {"version": "4", "status": "firing", "alerts": [{"status": "firing",
      "labels": {"alertname": "LoopmlDriftDetected", "model": "fraud", "source": "loopml"},
      "startsAt": "...", "fingerprint": "8f3c..."}], ...}

Alertmanager authenticates with a bearer token from its ``credentials_file``
(:mod:`loopml.platform.alertmanager`): a ``deployer`` (or ``admin``) token of the state store,
or ``LOOPML_ADMIN_TOKEN``. Answers: 401 for a missing or unknown token, 403 for a viewer, 400
for a body that is not that payload, 200 otherwise (with what was triggered and ignored).

An alert counts when it is firing, labelled ``source="loopml"`` and ``model=<this project's
model>``, and is a drift alert (its name says drift, or it is one of ``monitoring.alerts`` on a
``drift.*`` metric). Alertmanager re-sends a firing alert (every ``group_interval`` while its
group changes, every ``repeat_interval`` anyway): each firing (fingerprint + ``startsAt``) is
taken once, by an insert into the state store's ``kv`` table that a repeat collides with, so a
restarted controller does not re-trigger either. The trigger takes the path drift triggers
take (:meth:`Controller._trigger`: debounce, retry backoff), audited with the token's name.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import threading
from typing import Any, Callable

from loopml.errors import LoopmlError
from loopml.store.tokens import Verifier

MAX_BODY = 1 << 20  # Alertmanager groups are small; more is not a payload of ours
PATH = "/alerts"
ROLE = "deployer"


class AlertWebhook:
    """The listener. The constructor does no I/O; :meth:`start` binds, :meth:`stop` closes."""

    def __init__(self, controller, verifier: Verifier, *, host: str = "127.0.0.1", port: int = 0,
                 say: Callable[[str], None] = print) -> None:
        self.controller, self.verifier = controller, verifier
        self.host, self.port, self.say = host, port, say
        self._server: http.server.ThreadingHTTPServer | None = None
        self._collector: Any = None  # the gauges of GET /metrics, built on the first scrape
        self._registry: Any = None
        self._files: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{PATH}"

    # -- the decision (no sockets: what the tests call) -------------------------------------
    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
        if path.split("?", 1)[0] != PATH:
            return 404, {"error": f"{path}: not found; Alertmanager posts to {PATH}"}
        if method != "POST":
            return 405, {"error": f"{method} {PATH}: only POST"}
        from loopml.serve.auth import bearer

        who = self.verifier.identify(bearer(headers))
        if who is None:
            return 401, {"error": "send 'Authorization: Bearer <token>' (a deployer token; Alertmanager: "
                                  "http_config.authorization.credentials_file)"}
        if not who.allows(ROLE):
            return 403, {"error": f"POST {PATH} needs the {ROLE} role; token {who.name!r} has {who.role}"}
        try:
            alerts = _alerts(json.loads(body))
        except (ValueError, UnicodeDecodeError) as exc:
            return 400, {"error": f"body: {exc}; expected Alertmanager's webhook JSON ({{\"alerts\": [...]}})"}
        out: dict[str, Any] = {"triggered": [], "duplicate": 0, "ignored": 0}
        for alert in alerts:
            why = self._ignored(alert)
            if why:
                out["ignored"] += 1
                continue
            labels = alert["labels"]
            key = _firing_key(alert)
            if not self._first_time(key):
                out["duplicate"] += 1
                continue
            cause = (f"Alertmanager: {labels.get('alertname')} firing for {labels.get('model')} "
                     f"since {alert.get('startsAt', '?')} (fingerprint {key.split('@')[0]})")
            try:
                trig = self.controller._trigger("drift", cause, who=who.name)
            except Exception:
                self._forget(key)  # not taken: Alertmanager's retry (it retries on 5xx) gets another go
                raise
            if trig is not None:
                out["triggered"].append({"trigger": trig.id, "status": trig.status, "alert": labels.get("alertname")})
        return 200, out

    def _ignored(self, alert: dict) -> str | None:
        labels = alert["labels"]
        if alert.get("status") != "firing":
            return "resolved"
        if labels.get("source") != "loopml" or labels.get("model") != self.controller.model:
            return "not a loopml alert for this model"
        if not self._is_drift(str(labels.get("alertname", ""))):
            return "not a drift alert"
        return None

    def _is_drift(self, name: str) -> bool:
        if "drift" in name.lower():
            return True
        rules = getattr(self.controller.spec.monitoring, "alerts", None) or []
        return any(getattr(r, "name", None) == name and str(getattr(r, "metric", "")).startswith("drift")
                   for r in rules)

    def _first_time(self, key: str) -> bool:
        from sqlalchemy.exc import IntegrityError

        from loopml.store.schema import kv

        try:
            self.controller.store.store.run(lambda con: con.execute(kv.insert().values(key=_kv_key(key), value="1")))
        except IntegrityError:
            return False
        return True

    def _forget(self, key: str) -> None:
        from sqlalchemy import delete

        from loopml.store.schema import kv

        self.controller.store.store.run(lambda con: con.execute(delete(kv).where(kv.c.key == _kv_key(key))))

    # -- the socket ---------------------------------------------------------------------------
    def metrics_text(self) -> str:
        """The drift, quality and live-metric gauges of the controller's own latest check, in
        Prometheus text: on the platform the controller is the one process that reads every
        replica's log, so Prometheus scrapes it here (``GET /metrics``, read-only, like a
        server's) and the alert it fires comes back to ``POST /alerts``."""
        from prometheus_client import CollectorRegistry, generate_latest

        from loopml.monitor.metrics import MonitorCollector, MonitorFiles

        if self._collector is None:
            self._collector = MonitorCollector()
            self._registry = CollectorRegistry()
            self._registry.register(self._collector)
            self._files = MonitorFiles(self.controller.workspace.home, self._collector)
        self._files.refresh([self.controller.model])
        return generate_latest(self._registry).decode()

    def start(self) -> "AlertWebhook":
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # headers and body leave in two writes: without this, Nagle and the peer's
                # delayed ACK hold the body ~40 ms on every keep-alive answer
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _answer(self) -> None:
                if self.command == "GET" and self.path.split("?", 1)[0] == "/metrics":
                    return self._metrics()
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if length < 0 or length > MAX_BODY:
                    status, out = 413 if length > MAX_BODY else 400, {"error": f"Content-Length: at most {MAX_BODY} bytes"}
                    self.close_connection = True
                else:
                    body = self.rfile.read(length) if length else b""
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    try:
                        status, out = hook.handle(self.command, self.path, headers, body)
                    except Exception as exc:  # noqa: BLE001 - Alertmanager retries a 503; the controller goes on
                        status, out = 503, {"error": f"the trigger was not recorded ({type(exc).__name__}: {exc}); "
                                                     "retry"}
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Bearer realm="loopml"')
                self.end_headers()
                self.wfile.write(data)

            def _metrics(self) -> None:
                try:
                    data, status = hook.metrics_text().encode(), 200
                except Exception as exc:  # noqa: BLE001 - a failed scrape is Prometheus' "up 0", not a crash
                    data, status = f"# metrics unavailable: {type(exc).__name__}\n".encode(), 503
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET = do_PUT = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:  # no per-request lines (and never a header)
                pass

        try:
            self._server = http.server.ThreadingHTTPServer((self.host, self.port), Handler)
        except OSError as exc:
            raise LoopmlError(f"webhook port {self.port} on {self.host}: {exc.strerror}; pick another with "
                              "retrain.webhook_port or LOOPML_WEBHOOK_PORT") from None
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="loopml-webhook", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _alerts(payload: Any) -> list[dict]:
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        raise ValueError("not an object with an 'alerts' list")
    for a in payload["alerts"]:
        if not isinstance(a, dict) or not isinstance(a.get("labels"), dict) or not isinstance(a.get("status"), str):
            raise ValueError("every alert needs 'status' and a 'labels' object")
    return payload["alerts"]


def _firing_key(alert: dict) -> str:
    """One firing of one alert: Alertmanager's fingerprint (a hash of its labels when absent)
    and when it started (a firing after a resolve is a new one)."""
    fp = alert.get("fingerprint")
    if not isinstance(fp, str) or not fp:
        fp = hashlib.sha256(json.dumps(alert["labels"], sort_keys=True).encode()).hexdigest()[:16]
    return f"{fp}@{alert.get('startsAt', '')}"


def _kv_key(key: str) -> str:
    return f"webhook:alert:{key}"


def webhook_port(spec) -> int | None:
    """``LOOPML_WEBHOOK_PORT`` if set, else ``retrain.webhook_port``; None: no listener."""
    raw = os.environ.get("LOOPML_WEBHOOK_PORT")
    if raw not in (None, ""):
        try:
            port = int(raw)
        except ValueError:
            port = -1
        if not 0 <= port <= 65535:
            raise LoopmlError(f"LOOPML_WEBHOOK_PORT={raw!r}: not a port; give 0..65535 (0: any free port) or unset it")
        return port
    return getattr(spec.retrain, "webhook_port", None)


def start_webhook(controller, bootstrap_token: str | None, say: Callable[[str], None] = print) -> AlertWebhook | None:
    """The listener ``loopml up`` runs beside its controller, or None when none is configured."""
    port = webhook_port(controller.spec)
    if port is None:
        return None
    verifier = Verifier(controller.workspace.state_uri, bootstrap_token or os.environ.get("LOOPML_ADMIN_TOKEN"))
    hook = AlertWebhook(controller, verifier, host=os.environ.get("LOOPML_WEBHOOK_HOST") or "127.0.0.1",
                        port=port, say=say).start()
    say(f"Alertmanager webhook: {hook.url} (a deployer token authenticates it)")
    return hook
