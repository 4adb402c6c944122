"""A real Prometheus with a real Alertmanager: wired when start() returns, rules loaded by SIGHUP."""

from __future__ import annotations

import json
import urllib.request

from loopml.platform.alertmanager import Alertmanager
from loopml.platform.prometheus import Prometheus
from loopml.procs import pid_alive


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def test_start_returns_once_the_alertmanager_is_active_and_rules_load_on_write(tmp_path):
    am = Alertmanager(tmp_path / "am").start()
    prom = Prometheus(tmp_path / "prom", alertmanager=am.address)
    try:
        prom.start()
        active = _get(prom.url + "/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
        assert [a["url"] for a in active] == [am.url + "/api/v2/alerts"]  # no window where alerts drop
        assert prom.rule_names() == set()
        doc = {"groups": [{"name": "loopml", "rules": [{"alert": "X", "expr": "vector(1) > 0"}]}]}
        prom.write_rules(doc)
        assert prom.rule_names() == {"X"}  # write_rules returned after the reload took effect
        active = _get(prom.url + "/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
        assert [a["url"] for a in active] == [am.url + "/api/v2/alerts"]  # and after the reload's rediscovery
        prom.write_targets("srv", ["127.0.0.1:9"])
        assert json.loads((prom.targets_dir / "srv.json").read_text())[0]["targets"] == ["127.0.0.1:9"]
    finally:
        prom.stop()
        am.stop()
    assert not pid_alive(prom.pid) and not pid_alive(am.pid)
