"""The Platform's bookkeeping without starting engines: recorded pids, idempotent down, exports."""

from __future__ import annotations

import json
import subprocess
import sys

from loopml.platform.stack import Platform


def test_down_without_state_is_a_no_op(tmp_path):
    assert Platform(tmp_path / "none").down() == []
    assert not (tmp_path / "none").exists()


def test_a_reused_pid_is_neither_running_nor_signalled(tmp_path):
    # the recorded Alertmanager pid now belongs to an unrelated process (pid reuse after a reboot)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        plat = Platform(tmp_path / "p")
        plat.root.mkdir()
        plat.state_file.write_text(json.dumps({"alertmanager": {"pid": other.pid, "ports": {"main": 1},
                                                                "url": "http://127.0.0.1:1"}}))
        rows = {r.name: r for r in plat.status()}
        assert rows["alertmanager"].healthy is False and rows["postgres"].pid is None
        assert plat.down() == []  # not ours: left alone
        assert other.poll() is None
        assert json.loads(plat.state_file.read_text())["alertmanager"]["pid"] is None
    finally:
        other.kill()
        other.wait()


def test_exported_secret_is_a_command_not_the_value(tmp_path):
    plat = Platform(tmp_path / "p")
    (plat.root / "seaweedfs").mkdir(parents=True)
    (plat.root / "seaweedfs" / "s3_secret").write_text("s3cr3t\n")
    (plat.root / "postgres").mkdir()
    (plat.root / "postgres" / "password").write_text("pw\n")
    plat.state_file.write_text(json.dumps({"postgres": {"ports": {"main": 5}}, "seaweedfs": {"ports": {"s3": 7}},
                                           "mlflow": {"url": "http://127.0.0.1:9"}}))
    shown = plat.environment()
    assert shown["AWS_SECRET_ACCESS_KEY"] == f"$(cat {plat.root / 'seaweedfs' / 's3_secret'})"
    assert "s3cr3t" not in json.dumps(shown) and "pw@" not in shown["LOOPML_STATE_URI"]
    assert shown["LOOPML_STATE_URI"] == "postgresql://loopml@127.0.0.1:5/loopml"
    assert shown["AWS_ENDPOINT_URL"] == "http://127.0.0.1:7"
    assert plat.environment(secrets=True)["AWS_SECRET_ACCESS_KEY"] == "s3cr3t"


def test_environment_of_a_half_started_platform_is_a_clear_error(tmp_path):
    import pytest

    from loopml.errors import PlatformNotStarted

    plat = Platform(tmp_path / "p")
    plat.root.mkdir()
    plat.state_file.write_text(json.dumps({"postgres": {"ports": {"main": 5}}}))  # up failed after postgres
    with pytest.raises(PlatformNotStarted, match="loopml platform up"):
        plat.environment()
