"""Alertmanager receiving Prometheus's loopml alerts.

Clustering is off (``--cluster.listen-address=``): a single local instance has no peers, and
the default gossip port would listen on every interface. The receiver is a webhook when one is
configured (the controller's retraining trigger), else a sink that only records.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from loopml.errors import PlatformToolMissing
from loopml.platform.base import Engine, free_port, http_ok, wait_until


def alertmanager_binary() -> str:
    for name in ("alertmanager", "prometheus-alertmanager"):  # upstream, Debian
        found = shutil.which(name)
        if found:
            return found
    raise PlatformToolMissing("alertmanager", "Debian: apt-get install prometheus-alertmanager")


class Alertmanager(Engine):
    """One Alertmanager under ``root``. The constructor only stores values."""

    component = "alertmanager"

    def __init__(self, root: Path, *, port: int | None = None, webhook: str | None = None,
                 token_file: str | None = None) -> None:
        self.root = Path(root)
        self.port = port
        self.webhook = webhook
        self.token_file = token_file  # bearer token for the webhook, read by Alertmanager itself
        self.pid: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def config(self) -> dict:
        receiver: dict = {"name": "loopml"}
        if self.webhook:
            hook: dict = {"url": self.webhook, "send_resolved": True}
            if self.token_file:  # the token stays in its file: not in this config, not in argv
                hook["http_config"] = {"authorization": {"type": "Bearer", "credentials_file": str(self.token_file)}}
            receiver["webhook_configs"] = [hook]
        return {"route": {"receiver": "loopml", "group_by": ["alertname", "model"], "group_wait": "1s",
                          "group_interval": "10s", "repeat_interval": "1h"},
                "receivers": [receiver]}

    def argv(self) -> list[str]:
        return [alertmanager_binary(), f"--config.file={self.root / 'alertmanager.yml'}",
                f"--storage.path={self.root / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address="]

    def start(self, timeout: float = 60.0) -> "Alertmanager":
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        self._write_config()
        self._launch(self.argv(), self.healthy, timeout=timeout)
        return self

    def healthy(self) -> bool:
        return self.port is not None and http_ok(self.url + "/-/ready")

    def _write_config(self) -> None:
        (self.root / "alertmanager.yml").write_text(yaml.safe_dump(self.config(), sort_keys=False))

    def loaded_config(self) -> str:
        """The configuration the running Alertmanager uses (its ``/api/v2/status``)."""
        import json
        import urllib.request

        try:
            with urllib.request.urlopen(self.url + "/api/v2/status", timeout=5) as resp:
                return json.loads(resp.read())["config"]["original"]
        except (OSError, ValueError, KeyError):
            return ""

    def reconfigure(self, webhook: str | None, token_file: str | None = None) -> None:
        """Point the receiver at ``webhook`` and make the running Alertmanager reload (SIGHUP),
        returning once its status shows the new configuration."""
        import os
        import signal

        self.webhook, self.token_file = webhook, token_file
        self._write_config()
        if self.pid:
            os.kill(self.pid, signal.SIGHUP)
            want = webhook or "name: loopml"
            wait_until(self.component, lambda: want in self.loaded_config(), pid=self.pid, log=self.log, timeout=30)
