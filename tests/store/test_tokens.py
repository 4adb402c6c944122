"""The tokens table on both back ends (#11): only a salted hash is stored; names are unique."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from loopml.errors import TokenError
from loopml.store import open_store
from loopml.store.schema import tokens as tokens_t
from loopml.store.tokens import TokenStore


@pytest.fixture(params=["sqlite", "postgresql"])
def uri(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return request.getfixturevalue("pg_url")


def test_tokens_table_keeps_a_salted_hash_and_unique_names(uri):
    store = TokenStore(uri)
    a, b = store.create("ops", "admin"), store.create("ci", "deployer")
    rows = open_store(uri).run(lambda con: [dict(r) for r in con.execute(select(tokens_t)).mappings()])
    assert {r["name"]: r["role"] for r in rows} == {"ops": "admin", "ci": "deployer"}
    for row in rows:
        assert all(secret.split("_")[-1] not in str(v) for v in row.values() for secret in (a, b))
    assert len({r["salt"] for r in rows}) == 2
    assert store.verify(a).name == "ops" and store.verify(b).role == "deployer" and store.verify(a + "x") is None
    with pytest.raises(TokenError, match="exists"):
        store.create("ops", "viewer")
    store.revoke("ops")
    assert store.verify(a) is None and [r["name"] for r in store.list()] == ["ci"]
    assert store.list()[0]["last_used"] is not None
