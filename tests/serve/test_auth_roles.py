"""Roles per admin route (#11): viewer reads, deployer changes, admin does everything; 401 for a
missing or unknown token, 403 naming the role needed; the audit log names the token, never holds it."""

from __future__ import annotations

import httpx
import pytest

from loopml.serve import admin
from loopml.store.tokens import BOOTSTRAP, TokenStore, Verifier

BOOT = "boot-s3cret"
POLICY = {"kind": "canary", "weight": 0.1, "challenger": "challenger"}


@pytest.fixture
def tokens(workspace):
    store = TokenStore(workspace.state_uri)
    return {role: store.create(f"ci-{role}", role) for role in ("viewer", "deployer", "admin")}


@pytest.fixture
def role_server(tokens, make_server):
    return make_server(endpoints=("clf",), admin_token=BOOT)


def call(server, method, path, token=None, **kw):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, server.url + path, headers=headers, timeout=30, **kw)


@pytest.mark.parametrize("method,path,body", [
    ("GET", "/admin/models", None),
    ("GET", "/admin/models/clf", None),
    ("GET", "/admin/models/clf/traffic", None),
    ("POST", "/admin/reload", None),
    ("POST", "/admin/models/clf/reload", None),
    ("PUT", "/admin/models/clf/traffic", POLICY),
])
def test_each_route_answers_the_roles_it_allows(role_server, tokens, method, path, body):
    needed = admin.required_role(method, path)
    for role, token in tokens.items():
        r = call(role_server, method, path, token, json=body)
        allowed = role == "admin" or role == needed or (needed == "viewer")
        if allowed:
            assert r.status_code == 200, (role, r.text)
        else:
            assert r.status_code == 403, (role, r.text)
            assert f"needs the {needed} role" in r.json()["error"] and f"ci-{role}" in r.json()["error"]
    assert call(role_server, method, path, BOOT, json=body).status_code == 200  # the bootstrap admin


def test_reads_need_viewer_and_changes_need_deployer():
    assert admin.required_role("GET", "/admin/models") == "viewer"
    for method, path in (("POST", "/admin/reload"), ("PUT", "/admin/models/m/traffic"), ("DELETE", "/admin/models/m"),
                         ("POST", "/admin/models/m/load"), ("POST", "/admin/models/m/unload")):
        assert admin.required_role(method, path) == "deployer"


def test_a_missing_or_unknown_token_is_401_with_www_authenticate(role_server, tokens):
    forged = tokens["admin"][:-4] + "AAAA"  # right id, wrong secret
    for token in (None, "nope", forged, "loopml_000000000000_" + "A" * 43):
        r = call(role_server, "GET", "/admin/models", token)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert "error" in r.json()


def test_named_tokens_alone_enable_the_admin_api(tokens, make_server):
    server = make_server(endpoints=("clf",), admin_token=None)  # no LOOPML_ADMIN_TOKEN
    assert call(server, "GET", "/admin/models", tokens["viewer"]).status_code == 200
    assert call(server, "GET", "/admin/models").status_code == 401


def test_the_audit_log_names_the_token_that_changed_traffic_never_the_token(role_server, tokens, workspace):
    from loopml.registry import audit

    assert call(role_server, "PUT", "/admin/models/clf/traffic", tokens["deployer"], json=POLICY).status_code == 200
    assert call(role_server, "POST", "/admin/reload", BOOT).status_code == 200
    records = [c for c in audit.read(workspace) if c.alias == "admin"]
    assert [(c.who, c.action, c.model) for c in records] == [
        ("ci-deployer", "admin-traffic", "clf"), (BOOTSTRAP, "admin-reload", "*")]
    text = workspace.audit_log.read_text()
    assert all(t not in text for t in (*tokens.values(), BOOT))


def test_a_revoked_token_is_refused_once_the_cache_entry_expires(workspace):
    store = TokenStore(workspace.state_uri)
    token = store.create("bot", "deployer")
    cached, fresh = Verifier(workspace.state_uri, ttl=3600), Verifier(workspace.state_uri, ttl=0)
    assert cached.identify(token).name == fresh.identify(token).name == "bot"
    store.revoke("bot")
    assert cached.identify(token).name == "bot"  # within its TTL the cache still answers
    assert fresh.identify(token) is None  # past it, the store does
