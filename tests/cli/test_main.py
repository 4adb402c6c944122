"""The CLI as a user meets it: real processes, exit codes, one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


def loopml(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOOPML_HOME": str(home), "COLUMNS": "200"}
    env.pop("LOOPML_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "loopml.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _one_line_error(p: subprocess.CompletedProcess) -> str:
    err = p.stderr.strip()
    assert "Traceback" not in err and "Traceback" not in p.stdout
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def test_new_run_history_promote_rollback(tmp_path):
    home = tmp_path / "ws"
    p = loopml("new", "proj", "--rows", "3000", cwd=tmp_path, home=home)
    assert p.returncode == 0, p.stderr
    proj = tmp_path / "proj"
    assert (proj / "loopml.yaml").exists()
    p = loopml("run", "--json", cwd=proj, home=home)
    assert p.returncode == 0, p.stderr
    assert '"promoted": true' in p.stdout and '"version": "1"' in p.stdout
    p = loopml("run", cwd=proj, home=home)
    assert p.returncode == 0 and "nothing changed" in p.stdout
    p = loopml("train", "--source", "data/transactions_recent.csv", cwd=proj, home=home)
    assert p.returncode == 0, p.stderr
    assert "not promoted" in p.stdout
    p = loopml("promote", "fraud", "2", "--reason", "looks good", cwd=proj, home=home)
    assert p.returncode == 0 and "champion 1 -> 2" in p.stdout
    p = loopml("rollback", "fraud", cwd=proj, home=home)
    assert p.returncode == 0 and "2 -> 1" in p.stdout
    p = loopml("history", "fraud", "--json", cwd=proj, home=home)
    assert p.returncode == 0 and "looks good" in p.stdout
    p = loopml("evaluate", "fraud/2", "--json", cwd=proj, home=home)
    assert p.returncode == 0 and '"roc_auc"' in p.stdout


@pytest.mark.parametrize("args,fragment", [
    (("promote", "nosuch", "1"), "model 'nosuch'"),
    (("history", "nosuch"), "model 'nosuch'"),
    (("run",), "loopml.yaml: file not found"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, fragment):
    p = loopml(*args, cwd=tmp_path, home=tmp_path / "ws")
    assert p.returncode == 2
    assert fragment in _one_line_error(p)


def test_spec_typo_and_bad_data(tmp_path):
    home = tmp_path / "ws"
    loopml("new", "proj", "--rows", "1000", cwd=tmp_path, home=home)
    proj = tmp_path / "proj"
    spec = proj / "loopml.yaml"
    good = spec.read_text()
    spec.write_text(good.replace("max_depth: 5", "max_depth: ten"))
    p = loopml("run", cwd=proj, home=home)
    assert p.returncode == 2 and "model.params.max_depth" in _one_line_error(p)
    spec.write_text(good.replace("sklearn.ensemble.HistGradientBoostingClassifier", "sklearn.ensemble.Nope"))
    p = loopml("run", cwd=proj, home=home)
    assert p.returncode == 2 and "sklearn.ensemble.Nope" in _one_line_error(p)
    spec.write_text(good)
    (proj / "data" / "transactions.csv").write_text('a,b\n1,"unclosed\n')
    p = loopml("run", cwd=proj, home=home)
    assert p.returncode in (1, 2) and "transactions.csv" in _one_line_error(p)


def test_debug_shows_traceback(tmp_path):
    p = loopml("--debug", "promote", "nosuch", "1", cwd=tmp_path, home=tmp_path / "ws")
    assert p.returncode != 0 and "Traceback" in p.stderr


def test_retrain_status_and_rollout_commands(tmp_path):
    home = tmp_path / "ws"
    loopml("new", "proj", "--rows", "1000", cwd=tmp_path, home=home)
    proj = tmp_path / "proj"
    p = loopml("retrain", "--reason", "because", cwd=proj, home=home)
    assert p.returncode == 0 and "queued" in p.stdout
    p = loopml("status", "--json", cwd=proj, home=home)
    assert p.returncode == 0, p.stderr
    import json

    status = json.loads(p.stdout)
    assert status["server"] is None and status["rollout"] is None
    assert status["triggers"][0]["cause"] == "because" and status["triggers"][0]["status"] == "queued"
    p = loopml("rollout", "pause", cwd=proj, home=home)
    assert p.returncode == 2 and "no rollout in progress" in _one_line_error(p)
    p = loopml("serve", "-m", "fraud", "--port", "0", cwd=proj, home=home)
    assert p.returncode == 2 and "model 'fraud'" in _one_line_error(p)
