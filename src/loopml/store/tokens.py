"""Named API tokens with roles, in the state store (``LOOPML_STATE_URI``).

A token reads ``loopml_<id>_<secret>``: ``id`` (12 hex digits) is public and is the row's key,
``secret`` is 256 random bits (``secrets.token_urlsafe(32)``). The store keeps only
``sha256(salt || secret)`` with a random 16-byte salt per token, never the token.

Why SHA-256 and not scrypt: a slow KDF exists to make guessing a *low-entropy* secret (a
password) expensive. A 256-bit random secret cannot be guessed at any hash speed, so scrypt
would add no protection and would cost ~50 ms and 16 MiB on every cache miss of a request.
The salt keeps two databases' hashes of the same secret apart and rules out precomputed tables.

Roles are ordered: ``viewer`` (read metadata, metrics, status) < ``deployer`` (traffic,
promote, rollback, load, reload, retrain triggers) < ``admin`` (everything, token management).
``LOOPML_ADMIN_TOKEN`` stays the bootstrap admin, named ``env:LOOPML_ADMIN_TOKEN``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from loopml.errors import TokenError
from loopml.store.base import open_store
from loopml.store.schema import tokens as tokens_t

ROLES = ("viewer", "deployer", "admin")
BOOTSTRAP = "env:LOOPML_ADMIN_TOKEN"
CACHE_TTL_S = 5.0  # a revoke (or a new token) takes effect in every process within this
LAST_USED_RESOLUTION_S = 60.0  # "last used" is kept to the minute
_CACHE_MAX = 1024  # entries per process; unknown tokens are cached too, so a flood stays bounded
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_TOKEN = re.compile(r"^loopml_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class Identity:
    """Who acted: a token's name (what the audit log records) and its role."""

    name: str
    role: str

    def allows(self, needed: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(needed)


def check_role(role: str) -> str:
    if role not in ROLES:
        raise TokenError(f"--role: {role!r} is not a role; use one of {', '.join(ROLES)}")
    return role


def check_name(name: str) -> str:
    if not _NAME.match(name) or name.startswith("env:"):
        raise TokenError(f"token name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-' "
                         "(names starting with 'env:' are reserved)")
    return name


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


class TokenStore:
    """The tokens of one state store. The constructor does no I/O."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def _run(self, fn):
        return open_store(self.uri).run(fn)

    def create(self, name: str, role: str) -> str:
        """A new token for ``name`` (returned once: only its hash is stored)."""
        check_name(name)
        check_role(role)
        token_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
        row = dict(id=token_id, name=name, role=role, salt=salt, hash=_digest(salt, secret), created=time.time())
        try:
            self._run(lambda con: con.execute(tokens_t.insert().values(**row)))
        except IntegrityError:
            raise TokenError(f"token {name!r} exists; revoke it first ('loopml token revoke {name}') "
                             "or pick another name") from None
        return f"loopml_{token_id}_{secret}"

    def list(self) -> list[dict[str, Any]]:
        q = select(tokens_t.c.name, tokens_t.c.role, tokens_t.c.created, tokens_t.c.last_used).order_by(tokens_t.c.name)
        return [dict(r) for r in self._run(lambda con: con.execute(q).mappings().all())]

    def revoke(self, name: str) -> None:
        gone = self._run(lambda con: con.execute(delete(tokens_t).where(tokens_t.c.name == name)).rowcount)
        if not gone:
            raise TokenError(f"token {name!r}: no such token (see 'loopml token list')")

    def any(self) -> bool:
        return self._run(lambda con: con.execute(select(tokens_t.c.id).limit(1)).first()) is not None

    def verify(self, token: str) -> Identity | None:
        """The identity ``token`` stands for, or None; records when it was last used."""
        m = _TOKEN.match(token)
        if not m:
            return None
        token_id, secret = m.groups()

        def go(con) -> Identity | None:
            row = con.execute(select(tokens_t).where(tokens_t.c.id == token_id)).mappings().first()
            if row is None or not hmac.compare_digest(row["hash"], _digest(row["salt"], secret)):
                return None
            now = time.time()
            if row["last_used"] is None or now - row["last_used"] >= LAST_USED_RESOLUTION_S:
                # at most one write a minute per token: a read-only check costs no fsync
                con.execute(update(tokens_t).where(tokens_t.c.id == token_id).values(last_used=now))
            return Identity(row["name"], row["role"])
        return self._run(go)


class Verifier:
    """Token -> identity for a server or the webhook: the bootstrap token compared in constant
    time, named tokens looked up in the store and cached for :data:`CACHE_TTL_S` (hits and
    misses), so a busy client costs one store read per process every few seconds."""

    def __init__(self, uri: str | None, bootstrap: str | None = None, ttl: float = CACHE_TTL_S) -> None:
        self.store = TokenStore(uri) if uri else None
        self.bootstrap = bootstrap or None
        self.ttl = ttl
        self._cache: dict[bytes, tuple[float, Identity | None]] = {}
        self._lock = threading.Lock()

    def identify(self, token: str | None) -> Identity | None:
        if not token:
            return None
        if self.bootstrap and hmac.compare_digest(token.encode(), self.bootstrap.encode()):
            return Identity(BOOTSTRAP, "admin")
        if self.store is None:
            return None
        # keyed by a digest: the cache never holds a usable token
        key = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = self.store.verify(token)
        with self._lock:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = (now + self.ttl, found)
        return found

    def enabled(self) -> bool:
        """Whether any token could be accepted (the admin API exists only then)."""
        if self.bootstrap:
            return True
        if self.store is None:
            return False
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(b"any")
        if hit is not None and hit[0] > now:
            return hit[1] is not None
        found = self.store.any()
        with self._lock:
            self._cache[b"any"] = (now + self.ttl, Identity("", "viewer") if found else None)
        return found
