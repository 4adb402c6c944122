"""``loopml platform`` on bad input: one line, exit 2, nothing started (real CLI processes)."""

from __future__ import annotations

import os
import subprocess
import sys


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    return subprocess.run([sys.executable, "-m", "loopml.cli.main", "platform", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_status_and_env_without_a_platform(tmp_path):
    for cmd in ("status", "env"):
        out = _cli(cmd, "--dir", str(tmp_path / "nothing"))
        assert out.returncode == 2, out.stderr
        assert out.stderr.strip().count("\n") == 0 and "loopml platform up --dir" in out.stderr
        assert out.stdout == ""


def test_down_without_a_platform_is_fine(tmp_path):
    out = _cli("down", "--dir", str(tmp_path / "nothing"))
    assert out.returncode == 0 and "nothing was running" in out.stderr


def test_a_missing_token_file_is_refused_before_anything_starts(tmp_path):
    out = _cli("up", "--dir", str(tmp_path / "plat"), "--alert-webhook", "http://127.0.0.1:9/x",
               "--alert-webhook-token-file", str(tmp_path / "no-token"))
    assert out.returncode == 2
    assert "no-token" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "plat").exists()
