"""Prometheus scraping the loopml servers and evaluating loopml's exported alert rules.

The scrape targets come from a file_sd folder (``targets/*.json``) that loopml writes and
Prometheus re-reads on its own; the rules from ``rules/*.yml`` (the format
:mod:`loopml.monitor.prom_rules` exports), re-read on SIGHUP. Firing alerts go to the
platform's Alertmanager.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import yaml

from loopml.errors import PlatformToolMissing
from loopml.platform.base import Engine, free_port, http_ok, wait_until, write_private


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if not found:
        raise PlatformToolMissing("prometheus", "Debian: apt-get install prometheus")
    return found


class Prometheus(Engine):
    """One Prometheus under ``root``. The constructor only stores values."""

    component = "prometheus"

    def __init__(self, root: Path, *, alertmanager: str | None, port: int | None = None,
                 interval: str = "15s") -> None:
        self.root = Path(root)
        self.alertmanager = alertmanager  # host:port
        self.port = port
        self.interval = interval
        self.pid: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rules_dir(self) -> Path:
        return self.root / "rules"

    @property
    def targets_dir(self) -> Path:
        return self.root / "targets"

    def config(self) -> dict:
        cfg: dict = {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "rule_files": [str(self.rules_dir / "*.yml")],
            "scrape_configs": [{"job_name": "loopml", "metrics_path": "/metrics",
                                "file_sd_configs": [{"files": [str(self.targets_dir / "*.json")],
                                                     "refresh_interval": "5s"}]}],
        }
        if self.alertmanager:
            cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [self.alertmanager]}]}]}
        return cfg

    def argv(self) -> list[str]:
        return [prometheus_binary(), f"--config.file={self.root / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.root / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=7d"]

    def start(self, timeout: float = 60.0) -> "Prometheus":
        for d in (self.root / "data", self.rules_dir, self.targets_dir):
            d.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        (self.root / "prometheus.yml").write_text(yaml.safe_dump(self.config(), sort_keys=False))
        self._launch(self.argv(), self._wired, timeout=timeout)
        return self

    def healthy(self) -> bool:
        return self.port is not None and http_ok(self.url + "/-/ready")

    def write_rules(self, document: dict, name: str = "loopml") -> Path:
        """Install one rule file (a ``groups:`` document) and make a running Prometheus re-read it."""
        self.rules_dir.mkdir(parents=True, exist_ok=True)
        path = self.rules_dir / f"{name}.yml"
        write_private(path, yaml.safe_dump(document, sort_keys=False))
        os.chmod(path, 0o644)  # rules are not secret
        self.reload()
        # SIGHUP returns at once; wait until the API shows the rules so callers can rely on them
        names = {r["alert"] for g in document.get("groups", []) for r in g.get("rules", [])}
        # (a reload also restarts Alertmanager discovery: wait for that too)
        wait_until(self.component, lambda: names <= self.rule_names() and self._wired(), pid=self.pid,
                   log=self.log, timeout=30)
        return path

    def write_targets(self, name: str, targets: list[str], labels: dict[str, str] | None = None) -> Path:
        """Scrape ``targets`` (``host:port`` of loopml servers); Prometheus notices the file itself."""
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        path = self.targets_dir / f"{name}.json"
        write_private(path, json.dumps([{"targets": targets, "labels": labels or {}}]))
        os.chmod(path, 0o644)
        return path

    def _wired(self) -> bool:
        """Ready, and (when one is configured) sending to the Alertmanager: Prometheus discovers
        it asynchronously after becoming ready, and an alert before that would be dropped."""
        if not self.healthy():
            return False
        return not self.alertmanager or any(self.alertmanager in url for url in self._api_list(
            "/api/v1/alertmanagers", "activeAlertmanagers", "url"))

    def _api_list(self, path: str, key: str, field: str) -> list[str]:
        import urllib.request

        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return [item[field] for item in json.loads(resp.read())["data"][key]]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def rule_names(self) -> set[str]:
        """Names of the rules Prometheus has loaded (its HTTP API), empty when it does not answer."""
        import urllib.request

        try:
            with urllib.request.urlopen(self.url + "/api/v1/rules", timeout=5) as resp:
                groups = json.loads(resp.read())["data"]["groups"]
        except (OSError, ValueError, KeyError):
            return set()
        return {r["name"] for g in groups for r in g["rules"]}

    def reload(self) -> None:
        """SIGHUP: Prometheus re-reads its configuration and rule files (no lifecycle HTTP API needed)."""
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGHUP)
            except ProcessLookupError:
                pass
