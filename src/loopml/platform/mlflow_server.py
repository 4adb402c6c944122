"""The MLflow tracking server on PostgreSQL with artifacts proxied to the S3 store.

``mlflow server --backend-store-uri postgresql+psycopg2://... --artifacts-destination
s3://bucket/mlflow``: clients log artifacts through the server (``mlflow-artifacts:`` URIs),
so only the server needs the S3 endpoint and credentials. They reach it by environment
(``MLFLOW_S3_ENDPOINT_URL``, ``AWS_*``) and the database password by ``PGPASSFILE``;
the command line carries no secret.
"""

from __future__ import annotations

import sys
from pathlib import Path

from loopml.platform.base import Engine, free_port, http_ok


class MlflowServer(Engine):
    """One MLflow tracking server under ``root``. The constructor only stores values."""

    component = "mlflow"

    def __init__(self, root: Path, *, backend_uri: str, artifacts: str, env: dict[str, str],
                 port: int | None = None) -> None:
        if "@" in backend_uri and ":" in backend_uri.split("@", 1)[0].split("//", 1)[-1]:
            raise ValueError("backend_uri must not hold a password (it would be in argv); use PGPASSFILE")
        self.root = Path(root)
        self.backend_uri = backend_uri
        self.artifacts = artifacts
        self.env = env
        self.port = port
        self.pid: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
                "--port", str(self.port), "--workers", "1",
                "--backend-store-uri", self.backend_uri, "--artifacts-destination", self.artifacts]

    def start(self, timeout: float = 120.0) -> "MlflowServer":
        """Start the server and wait for ``/health`` (the first start creates MLflow's schema in
        PostgreSQL, which takes a while)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        self._launch(self.argv(), self.healthy, timeout=timeout, env=self.env)
        return self

    def healthy(self) -> bool:
        return self.port is not None and http_ok(self.url + "/health")
