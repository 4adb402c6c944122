"""``loopml demo`` starts from a clean workspace of its own, and never wipes anyone else's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loopml.demo.run import MARKER, fresh_demo_workspace
from loopml.errors import NotADemoWorkspace


def test_new_folder_becomes_a_marked_demo_workspace(tmp_path):
    ws = fresh_demo_workspace(tmp_path / "demo")
    assert ws.home == (tmp_path / "demo").resolve()
    assert (ws.home / MARKER).is_file() and ws.predictions.is_dir()
    assert ws.tracking_uri == f"sqlite:///{ws.home / 'mlflow.db'}"


def test_second_run_starts_from_nothing(tmp_path):
    ws = fresh_demo_workspace(tmp_path / "demo")
    # what a first run leaves: a registry, logged traffic, a project, a summary
    (ws.home / "mlflow.db").write_bytes(b"v1 v2")
    (ws.predictions / "fraud").mkdir()
    (ws.predictions / "fraud" / "part-0.parquet").write_bytes(b"2000 rows")
    (ws.home / "demo-project" / "data").mkdir(parents=True)
    (ws.home / "demo-summary.md").write_text("0.9 s to new champion")
    again = fresh_demo_workspace(tmp_path / "demo")
    first = fresh_demo_workspace(tmp_path / "never-used")

    def listing(home):
        return sorted(str(p.relative_to(home)) for p in home.rglob("*"))

    assert listing(again.home) == listing(first.home)  # exactly what a first run starts from
    db = again.home / "mlflow.db"
    assert not db.exists() or db.read_bytes() != b"v1 v2"  # a new registry, not the old one
    assert not (again.home / "demo-project").exists() and not (again.home / "demo-summary.md").exists()


def test_empty_folder_is_used(tmp_path):
    (tmp_path / "empty").mkdir()
    assert (fresh_demo_workspace(tmp_path / "empty").home / MARKER).is_file()


def test_a_folder_the_demo_did_not_create_is_refused_and_untouched(tmp_path):
    mine = tmp_path / "my-work"
    (mine / "notes").mkdir(parents=True)
    (mine / "mlflow.db").write_bytes(b"precious")
    with pytest.raises(NotADemoWorkspace, match=f"not a loopml demo workspace \\(no {MARKER}\\)") as exc:
        fresh_demo_workspace(mine)
    assert exc.value.exit_code == 2 and str(mine) in str(exc.value)
    assert sorted(p.name for p in mine.iterdir()) == ["mlflow.db", "notes"]
    assert (mine / "mlflow.db").read_bytes() == b"precious"


def test_a_marker_that_is_a_symlink_or_folder_does_not_count(tmp_path):
    real = tmp_path / "real-marker"
    real.write_text("x")
    for kind in ("symlink", "dir"):
        home = tmp_path / kind
        home.mkdir()
        (home / "keep.txt").write_text("keep")
        if kind == "symlink":
            (home / MARKER).symlink_to(real)
        else:
            (home / MARKER).mkdir()
        with pytest.raises(NotADemoWorkspace):
            fresh_demo_workspace(home)
        assert (home / "keep.txt").read_text() == "keep"


def test_a_symlinked_or_file_home_is_refused(tmp_path):
    target = fresh_demo_workspace(tmp_path / "demo").home
    (target / "x").write_text("x")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(NotADemoWorkspace, match="not a folder"):
        fresh_demo_workspace(link)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADemoWorkspace, match="not a folder"):
        fresh_demo_workspace(tmp_path / "file")
    assert (target / "x").exists()


def test_wipe_does_not_follow_symlinks_out_of_the_workspace(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data.csv").write_text("keep")
    ws = fresh_demo_workspace(tmp_path / "demo")
    (ws.home / "link").symlink_to(outside, target_is_directory=True)
    fresh_demo_workspace(tmp_path / "demo")
    assert not (ws.home / "link").exists() and (outside / "data.csv").read_text() == "keep"


def test_refused_from_inside_the_workspace(tmp_path, monkeypatch):
    ws = fresh_demo_workspace(tmp_path / "demo")
    monkeypatch.chdir(ws.predictions)
    with pytest.raises(NotADemoWorkspace, match="current folder is inside it"):
        fresh_demo_workspace(tmp_path / "demo")
    assert (ws.home / MARKER).exists()


def test_cli_refuses_a_user_folder_with_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from loopml.cli.main import main

    mine = tmp_path / "my-work"
    mine.mkdir()
    (mine / "audit.jsonl").write_text("{}\n")
    # LOOPML_HOME is the user's own workspace: the demo never takes it as its own
    monkeypatch.setenv("LOOPML_HOME", str(mine))
    monkeypatch.chdir(tmp_path)
    os.makedirs(tmp_path / ".loopml-demo")
    (tmp_path / ".loopml-demo" / "other.txt").write_text("not a demo")
    monkeypatch.setattr("sys.argv", ["loopml", "demo"])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert str(Path(tmp_path / ".loopml-demo").resolve()) in err and "--home" in err
    assert (mine / "audit.jsonl").exists() and sorted(p.name for p in mine.iterdir()) == ["audit.jsonl"]
    monkeypatch.setattr("sys.argv", ["loopml", "demo", "--home", str(mine)])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2 and "not a loopml demo workspace" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["audit.jsonl"]
