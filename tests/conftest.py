"""Shared fixtures: a temporary workspace, a generated project, a registered model."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopml.config import Workspace


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.delenv("LOOPML_TRACKING_URI", raising=False)
    monkeypatch.setenv("LOOPML_HOME", str(tmp_path / "ws"))
    return Workspace.from_env(tmp_path / "ws").init()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The example fraud project with 3,000 generated rows per period."""
    from loopml.demo.project import scaffold_project

    return scaffold_project(tmp_path / "proj", rows=3000)


@pytest.fixture(scope="session")
def _registered_model_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Train and register the example model once per session; tests get a copy."""
    from loopml.demo.project import scaffold_project
    from loopml.loop.pipeline import run_pipeline
    from loopml.spec import load_spec

    root = tmp_path_factory.mktemp("registered")
    proj = scaffold_project(root / "proj", rows=3000)
    ws = Workspace(root / "ws").init()
    spec = load_spec(proj)
    result = run_pipeline(spec, ws, project_dir=proj)
    assert result.promoted and result.version == "1"
    return root, spec.name


@pytest.fixture
def registered_model(_registered_model_template, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Workspace, str]:
    """(workspace, model name): a private copy of a workspace whose 'fraud' v1 is champion.

    The MLflow SQLite database stores absolute artifact paths, so the copy keeps its
    artifacts where the template put them (read-only use); registry writes go to the copy.
    """
    import shutil

    root, name = _registered_model_template
    dst = tmp_path / "ws"
    shutil.copytree(root / "ws", dst)
    monkeypatch.delenv("LOOPML_TRACKING_URI", raising=False)
    monkeypatch.setenv("LOOPML_HOME", str(dst))
    return Workspace(dst).init(), name
