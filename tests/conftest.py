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


# --- PostgreSQL (issue #11): ONE private server per test session, a fresh database per call ---


@pytest.fixture(scope="session")
def _postgres_server(tmp_path_factory: pytest.TempPathFactory):
    """A PostgreSQL cluster on 127.0.0.1 and a free port (as the ``postgres`` user when we are
    root), started on first use and stopped and deleted at the end of the session."""
    from loopml.platform.postgres import PostgresServer

    server = PostgresServer(tmp_path_factory.mktemp("postgres") / "pg").start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def pg_database(_postgres_server):
    """Factory: ``pg_database()`` creates a new empty database ``test_<n>`` on the session's
    server and returns its ``postgresql://`` URL (password included; session-scoped, so
    session- and module-scoped fixtures may use it too)."""
    import itertools

    counter = itertools.count(1)

    def make() -> str:
        return _postgres_server.create_database(f"test_{next(counter)}")

    return make


@pytest.fixture
def pg_url(pg_database) -> str:
    """``postgresql://`` URL of a fresh, empty database for this test."""
    return pg_database()


# --- the local platform (issue #11): ONE `loopml platform up` per test session ---


@pytest.fixture(scope="session")
def local_platform(tmp_path_factory: pytest.TempPathFactory):
    """A running platform (PostgreSQL, SeaweedFS, MLflow, Alertmanager, Prometheus) started by the
    real CLI, ``loopml platform up --dir DIR``; stopped and deleted at the end of the session.
    Yields the :class:`~loopml.platform.stack.Platform`; ``up_stdout`` holds the printed exports."""
    import os
    import subprocess
    import sys

    from loopml.platform.stack import Platform

    folder = tmp_path_factory.mktemp("platform") / "plat"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPML_", "MLFLOW_", "AWS_", "PG"))}
    out = subprocess.run([sys.executable, "-m", "loopml.cli.main", "platform", "up", "--dir", str(folder)],
                         capture_output=True, text=True, env=env, timeout=600)
    plat = Platform(folder)
    try:
        assert out.returncode == 0, out.stderr[-3000:]
        plat.up_stdout = out.stdout
        yield plat
    finally:
        plat.remove()


@pytest.fixture(scope="session")
def platform_env(local_platform) -> dict:
    """A copy of the environment pointing loopml at ``local_platform`` (LOOPML_TRACKING_URI,
    LOOPML_STATE_URI, PGPASSFILE, AWS_*; the S3 secret read from its file), for subprocesses."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPML_", "MLFLOW_", "AWS_", "PG"))}
    env.update(local_platform.environment(secrets=True))
    return env
