"""A real Alertmanager: loopback only, no cluster gossip, webhook reconfigured by SIGHUP."""

from __future__ import annotations

import json
import urllib.request

from loopml.platform.alertmanager import Alertmanager
from loopml.procs import pid_alive


def test_reconfigure_points_at_the_webhook_without_the_token_in_the_config(tmp_path):
    token = tmp_path / "token"
    token.write_text("tok-123\n")
    am = Alertmanager(tmp_path / "am").start()
    try:
        with urllib.request.urlopen(am.url + "/api/v2/status", timeout=5) as resp:
            status = json.loads(resp.read())
        assert status["cluster"]["status"] == "disabled"
        assert "webhook_configs" not in am.loaded_config()
        pid = am.pid
        am.reconfigure("http://127.0.0.1:9/hook", str(token))
        loaded = am.loaded_config()
        assert "http://127.0.0.1:9/hook" in loaded and str(token) in loaded
        assert "tok-123" not in loaded and "tok-123" not in (tmp_path / "am" / "alertmanager.yml").read_text()
        assert am.pid == pid and am.healthy()  # reloaded in place, not restarted
    finally:
        am.stop()
    assert not pid_alive(am.pid) and not am.healthy()
