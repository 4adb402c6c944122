"""The state store's two back ends as one parametrized fixture: import ``state_uri`` into a
test module and each of its tests runs on SQLite and on a fresh PostgreSQL database (the
session's private server, ``pg_url`` in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def state_uri(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return request.getfixturevalue("pg_url")
