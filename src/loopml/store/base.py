"""The store contract: transactions over one SQL database chosen by a URI.

Everything that must survive a crash and be shared by several processes (rollouts,
triggers, alert state, the audit table, traffic policies, the controller's holder record)
goes through a :class:`Store`. A transaction is all-or-nothing on both back ends:

- SQLite (``sqlite:///path``, the default, one machine): ``BEGIN IMMEDIATE`` takes the
  write lock at the start, so two writers never interleave and no retry is needed.
- PostgreSQL (``postgresql://user:pass@host:port/db``, several machines): ``SERIALIZABLE``;
  a transaction that loses a conflict fails with a serialization error and
  :meth:`Store.run` runs it again from the start (it is a function for that reason).

``open_store`` fails closed with one line naming ``LOOPML_STATE_URI`` when the scheme is
unknown or the database cannot be reached: it never falls back to a local SQLite file,
which would split the state of a fleet without anyone noticing.
"""

from __future__ import annotations

import os
import re
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from contextlib import AbstractContextManager
from typing import Any, Callable, TypeVar

from loopml.errors import StateStoreUnavailable

T = TypeVar("T")

SCHEMES = ("sqlite", "postgresql")
HINT = "use sqlite:///<path> or postgresql://<user>:<password>@<host>:<port>/<database>"


class Store(ABC):
    """One database. Constructing does no I/O; :func:`open_store` connects and migrates."""

    uri: str
    dialect: str  # "sqlite" | "postgresql"

    @abstractmethod
    def run(self, fn: Callable[[Any], T]) -> T:
        """``fn(connection)`` in one transaction, committed when it returns; run again from the
        start when PostgreSQL reports a serialization failure or a deadlock."""

    @abstractmethod
    def tx(self) -> AbstractContextManager[Any]:
        """One transaction around a ``with`` body (not retried: for bodies that cannot be
        re-run; a lost conflict raises and the caller's next attempt starts afresh)."""

    @abstractmethod
    def session_lock(self, name: str) -> Any | None:
        """A lock held by a dedicated connection until released or until this process dies
        (PostgreSQL advisory lock); None when taken by someone else. SQLite has none (the
        caller keeps its ``flock``): raises NotImplementedError."""

    @abstractmethod
    def dispose(self) -> None:
        """Close pooled connections (a forked child must not share its parent's)."""


def redact(uri: str) -> str:
    """The URI without its password (error messages and logs never carry it)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", uri)


def scheme_of(uri: str) -> str:
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    return scheme.split("+", 1)[0].lower()


_lock = threading.Lock()
_open: "OrderedDict[tuple[int, str], Store]" = OrderedDict()
MAX_OPEN = 16  # stores kept open per process (least recently opened first out: tests make many)


def open_store(uri: str) -> Store:
    """The store at ``uri``, connected and with its schema current; one per process and URI
    (engines are per process: a forked child opens its own)."""
    key = (os.getpid(), uri)
    with _lock:
        store = _open.get(key)
        if store is not None:
            _open.move_to_end(key)
            return store
        scheme = scheme_of(uri)
        if scheme not in SCHEMES:
            raise StateStoreUnavailable(redact(uri), f"unknown scheme {scheme or '(none)'!r}; {HINT}")
        from loopml.store.sql import SqlStore

        store = SqlStore(uri)
        store.connect()
        _open[key] = store
        while len(_open) > MAX_OPEN:
            _open.popitem(last=False)[1].dispose()  # its users reconnect through open_store on next use
        return store


def forget(uri: str) -> None:
    """Drop this process's cached store for ``uri`` (tests dropping a database)."""
    with _lock:
        store = _open.pop((os.getpid(), uri), None)
    if store is not None:
        store.dispose()
