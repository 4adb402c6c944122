"""The local platform as one object: start, check and stop every engine in a folder it owns.

``DIR/platform.json`` records each component's pid, ports and URL (no secret: the database
password, the S3 secret key and the libpq password file are 0600 files next to it), so
``status`` and ``down`` work from any later process and a second ``up`` restarts only what
died. Components start in dependency order: PostgreSQL and SeaweedFS, then MLflow on both,
then Alertmanager, then Prometheus, which sends to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from loopml.platform.alertmanager import Alertmanager
from loopml.platform.base import write_private
from loopml.platform.mlflow_server import MlflowServer
from loopml.platform.postgres import PostgresServer
from loopml.platform.prometheus import Prometheus
from loopml.platform.seaweed import SeaweedS3
from loopml.procs import pid_alive

ORDER = ("postgres", "seaweedfs", "mlflow", "alertmanager", "prometheus")
# What each engine's command line contains: a recorded pid whose process does not match was
# reused by the system for something else, so it is neither "running" nor ours to signal.
PROCESS_MARK = {"postgres": "postgres", "seaweedfs": "weed", "mlflow": "mlflow",
                "alertmanager": "alertmanager", "prometheus": "prometheus"}
# Who is started with whose address: when one of these moves, the dependant restarts.
DEPENDS = {"mlflow": ("postgres", "seaweedfs"), "prometheus": ("alertmanager",)}
BUCKET = "loopml"
REGION = "us-east-1"
# Rules installed when the project has none: the drift gauges every loopml server exports.
DEFAULT_RULES = [
    {"name": "LoopmlDriftDetected", "metric": "drift.detected", "op": ">=", "threshold": 1,
     "severity": "warning", "summary": "data drift detected on a served model"},
    {"name": "LoopmlDriftShareHigh", "metric": "drift.share", "op": ">=", "threshold": 0.5,
     "severity": "critical", "summary": "half or more of the features drifted"},
]

Progress = Callable[[str, str], None]


@dataclass
class ComponentStatus:
    name: str
    pid: int | None
    url: str
    healthy: bool
    action: str = ""  # what the last `up` did: "started", "restarted", "running"


class Platform:
    """The engines under ``root``. The constructor only stores the folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    @property
    def state_file(self) -> Path:
        return self.root / "platform.json"

    # --- the components, rebuilt from the recorded state --------------------------------

    def _components(self, state: dict) -> dict:
        ports = {name: state.get(name, {}).get("ports", {}) for name in ORDER}
        pg = PostgresServer(self.root / "postgres", port=ports["postgres"].get("main"))
        s3 = SeaweedS3(self.root / "seaweedfs", ports=ports["seaweedfs"], bucket=BUCKET)
        hook = state.get("alertmanager", {})
        am = Alertmanager(self.root / "alertmanager", port=ports["alertmanager"].get("main"),
                          webhook=hook.get("webhook"), token_file=hook.get("token_file"))
        mlflow = MlflowServer(self.root / "mlflow", backend_uri="", artifacts=f"s3://{BUCKET}/mlflow", env={},
                              port=ports["mlflow"].get("main"))
        prom = Prometheus(self.root / "prometheus", alertmanager=None, port=ports["prometheus"].get("main"))
        comps = {"postgres": pg, "seaweedfs": s3, "mlflow": mlflow, "alertmanager": am, "prometheus": prom}
        for name, comp in comps.items():
            comp.pid = state.get(name, {}).get("pid")
        return comps

    def _wire(self, comps: dict) -> None:
        """Settings one component takes from another, known once that one has started."""
        pg, s3, mlflow, am, prom = (comps[n] for n in ORDER)
        if pg.port:
            mlflow.backend_uri = f"postgresql+psycopg2://loopml@127.0.0.1:{pg.port}/mlflow"
        if s3.ports.get("s3"):
            mlflow.env = {"PGPASSFILE": str(pg.pgpass_file), "MLFLOW_S3_ENDPOINT_URL": s3.endpoint,
                          "AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key(),
                          "AWS_DEFAULT_REGION": REGION}
        if am.port:
            prom.alertmanager = am.address

    # --- commands -----------------------------------------------------------------------

    def up(self, progress: Progress | None = None, rules: list | None = None) -> list[ComponentStatus]:
        """Start every component that is not running and healthy; leave healthy ones alone."""
        say = progress or (lambda name, what: None)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)  # it holds the secrets
        with self._lock():
            state = self.read_state()
            comps = self._components(state)
            actions: dict[str, str] = {}
            moved: set[str] = set()  # components whose URL changed in this `up`
            for name in ORDER:
                comp = comps[name]
                self._wire(comps)
                stale = any(dep in moved for dep in DEPENDS.get(name, ()))
                if not stale and self._running(name, comp) and comp.healthy():
                    actions[name] = "running"
                    say(name, "running")
                    continue
                was = name in state
                say(name, "restarting" if was else "starting")
                if self._running(name, comp):
                    self._stop(comp)  # alive but unhealthy, or what it connects to moved
                if any(p and not _port_free(p) for p in self._ports(name, comp).values()):
                    # someone else took a recorded port while this was down: new ports, new URL
                    self._forget_ports(name, comp)
                t0 = time.monotonic()
                comp.start()
                if state.get(name, {}).get("url") not in (None, self._url(name, comp)):
                    moved.add(name)
                if name == "postgres":
                    for db in ("mlflow", "loopml"):
                        comp.create_database(db)
                actions[name] = "restarted" if was else "started"
                state[name] = {**state.get(name, {}), "pid": comp.pid if name != "postgres" else comp.read_pid(),
                               "ports": self._ports(name, comp), "url": self._url(name, comp),
                               "start_s": round(time.monotonic() - t0, 2)}
                self._write_state(state)  # after each: a failure later still leaves a record `down` uses
                say(name, "healthy")
            comps["prometheus"].write_rules(self._rules_document(rules))
            return [ComponentStatus(n, state[n]["pid"], state[n]["url"], True, actions[n]) for n in ORDER]

    def status(self) -> list[ComponentStatus]:
        state = self.read_state()
        comps = self._components(state)
        out = []
        for name in ORDER:
            entry = state.get(name)
            if entry is None:
                out.append(ComponentStatus(name, None, "", False))
                continue
            comp = comps[name]
            ok = self._running(name, comp) and comp.healthy()
            out.append(ComponentStatus(name, entry.get("pid"), entry.get("url", ""), ok))
        return out

    def down(self, progress: Progress | None = None) -> list[str]:
        """Stop every component (reverse order); idempotent. Data and secrets stay in the folder."""
        say = progress or (lambda name, what: None)
        if not self.state_file.exists():
            return []
        with self._lock():
            state = self.read_state()
            comps = self._components(state)
            stopped = []
            for name in reversed(ORDER):
                if name not in state:
                    continue
                if self._running(name, comps[name]):
                    say(name, "stopping")
                    self._stop(comps[name])
                    stopped.append(name)
                state[name]["pid"] = None
                self._write_state(state)
            return stopped

    def remove(self) -> None:
        """``down``, then delete the folder and everything in it (data, secrets, logs)."""
        import shutil

        self.down()
        self._components(self.read_state())["postgres"].remove()
        shutil.rmtree(self.root, ignore_errors=True)

    def environment(self, *, secrets: bool = False) -> dict[str, str]:
        """The variables that point loopml at this platform. Without ``secrets`` the S3 secret key
        is a shell command reading its file (``$(cat ...)``), fit to print."""
        state = self.read_state()
        if not {"postgres", "seaweedfs", "mlflow"} <= set(state):
            from loopml.errors import PlatformNotStarted

            raise PlatformNotStarted(str(self.root))  # an `up` that failed before MLflow ran
        comps = self._components(state)
        pg, s3 = comps["postgres"], comps["seaweedfs"]
        secret = s3.secret_key() if secrets else f"$(cat {s3.secret_file})"
        return {
            "LOOPML_TRACKING_URI": state["mlflow"]["url"],
            "LOOPML_STATE_URI": pg.url("loopml", with_password=False),
            "PGPASSFILE": str(pg.pgpass_file),
            "AWS_ENDPOINT_URL": s3.endpoint,
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": REGION,
        }

    def set_alert_webhook(self, url: str | None, token_file: str | Path | None = None) -> None:
        """Send Alertmanager's notifications to ``url`` (e.g. the controller's trigger webhook),
        authenticated with the bearer token in ``token_file``; kept across restarts."""
        with self._lock():
            state = self.read_state()
            am = self._components(state)["alertmanager"]
            token = str(Path(token_file).resolve()) if token_file else None
            am.reconfigure(url, token)
            state.setdefault("alertmanager", {}).update(webhook=url, token_file=token)
            self._write_state(state)

    def add_scrape_targets(self, name: str, targets: list[str]) -> Path:
        """Have Prometheus scrape loopml servers (``host:port``) under the file name ``name``."""
        return self._components(self.read_state())["prometheus"].write_targets(name, targets)

    # --- state ---------------------------------------------------------------------------

    def read_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}

    def _write_state(self, state: dict) -> None:
        write_private(self.state_file, json.dumps(state, indent=2))

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One `up`/`down` at a time per folder (two would start two of each engine)."""
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # --- helpers -------------------------------------------------------------------------

    @staticmethod
    def _running(name: str, comp) -> bool:
        pid = comp.read_pid() if name == "postgres" else comp.pid
        return bool(pid) and pid_alive(pid) and _cmdline_has(pid, PROCESS_MARK[name])

    @staticmethod
    def _stop(comp) -> None:
        comp.stop()  # each engine's own stop: pg_ctl for PostgreSQL, weed's /tmp sockets removed
        comp.pid = None

    @staticmethod
    def _ports(name: str, comp) -> dict:
        return dict(comp.ports) if name == "seaweedfs" else {"main": comp.port}

    @staticmethod
    def _forget_ports(name: str, comp) -> None:
        if name == "seaweedfs":
            comp.ports = {}
        else:
            comp.port = None

    @staticmethod
    def _url(name: str, comp) -> str:
        if name == "postgres":
            return comp.url("loopml", with_password=False)
        return comp.endpoint if name == "seaweedfs" else comp.url

    @staticmethod
    def _rules_document(rules: list | None) -> dict:
        from loopml.monitor.alerts import parse_rules
        from loopml.monitor.prom_rules import prometheus_rules

        return prometheus_rules(rules if rules else parse_rules(DEFAULT_RULES, "loopml platform defaults"),
                                evaluation_interval="15s")


def _port_free(port: int) -> bool:
    """Whether we could listen on 127.0.0.1:``port`` (SO_REUSEADDR, as the engines do, so a
    socket of ours lingering in TIME_WAIT does not count as taken)."""
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", int(port)))
        except OSError:
            return False
    return True


def _cmdline_has(pid: int, mark: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return mark.encode() in fh.read()
    except OSError:
        return not os.path.isdir("/proc")  # no /proc (not Linux): the pid check is all we have
