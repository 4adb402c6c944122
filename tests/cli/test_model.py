"""`loopml promote` / `loopml run` fail closed (#8): real processes, exit codes, one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

from loopml.config import Workspace
from loopml.registry.client import Registry
from tests.cli.test_main import _one_line_error, loopml
from tests.registry.mlflow_raw import Payload, fitted, frame, register_raw

ROOT = Path(__file__).resolve().parents[2]  # cwd for commands that must unpickle tests.registry objects


def test_promote_a_version_whose_file_is_gone_exits_2_and_moves_nothing(tmp_path):
    ws = Workspace(tmp_path / "ws").init()
    X, _ = frame(5)
    good, _ = register_raw(ws, "m", fitted(), input_example=X)
    Registry(ws).promote("m", good)
    bad, stored = register_raw(ws, "m", fitted(), input_example=X)
    (stored / "model.skops").unlink()
    p = loopml("promote", "m", bad, cwd=tmp_path, home=ws.home)
    assert p.returncode == 2
    err = _one_line_error(p)
    assert "model 'm' version 2" in err and "broken" in err
    reg = Registry(ws)
    assert reg.resolve("m").version == good
    assert reg.resolve("m", bad).tags["loopml.status"] == "broken"
    assert [c.version for c in reg.history("m")] == [good]


def test_promote_a_pickle_needs_the_unsafe_flag(tmp_path):
    ws = Workspace(tmp_path / "ws").init()
    marker = tmp_path / "payload-ran"
    X, _ = frame(5)
    version, _ = register_raw(ws, "evil", Payload(marker), fmt="pickle", input_example=X)
    marker.unlink(missing_ok=True)
    p = loopml("promote", "evil", version, cwd=ROOT, home=ws.home)
    assert p.returncode == 2 and "stored as pickle" in _one_line_error(p)
    assert "--allow-unsafe-pickle" in p.stderr
    assert not marker.exists() and Registry(ws).try_resolve("evil") is None
    p = loopml("promote", "evil", version, "--allow-unsafe-pickle", cwd=ROOT, home=ws.home)
    assert p.returncode == 0, p.stderr
    assert Registry(ws).resolve("evil").version == version


def test_two_first_runs_at_once_on_a_new_workspace_both_succeed(tmp_path):
    from loopml.demo.project import scaffold_project

    proj = scaffold_project(tmp_path / "proj", rows=1000)
    home = tmp_path / "ws"  # does not exist yet
    env = {**os.environ, "LOOPML_HOME": str(home), "COLUMNS": "200"}
    env.pop("LOOPML_TRACKING_URI", None)
    procs = [subprocess.Popen([sys.executable, "-m", "loopml.cli.main", "run", "--json"], cwd=proj, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert (home.stat().st_mode & 0o777) == 0o700
    assert ((home / "mlflow.db").stat().st_mode & 0o777) == 0o600
    assert ((home / "audit.jsonl").stat().st_mode & 0o777) == 0o600
