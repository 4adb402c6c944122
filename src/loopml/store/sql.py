"""The one :class:`~loopml.store.base.Store` implementation, on SQLAlchemy Core; the
dialect (SQLite or PostgreSQL through psycopg2) comes from the URI."""

from __future__ import annotations

import hashlib
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from loopml.errors import StateStoreUnavailable
from loopml.store.base import Store, redact, scheme_of
from loopml.store.schema import migrate

T = TypeVar("T")

# PostgreSQL's "try again" codes: serialization_failure, deadlock_detected
RETRY_CODES = ("40001", "40P01")
MAX_ATTEMPTS = 30
MIGRATION_LOCK = 0x6C6F6F706D6C  # "loopml": concurrent first opens create the tables once


class SqlStore(Store):
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.dialect = scheme_of(uri)
        self._engine: Engine | None = None

    # -- opening ----------------------------------------------------------------------------
    def connect(self) -> "SqlStore":
        try:
            self._engine = self._make_engine()
            self.run(self._migrate)
        except OperationalError as exc:
            self.dispose()
            raise StateStoreUnavailable(redact(self.uri), f"cannot reach the database ({_first_line(exc)}); "
                                        "start it or point LOOPML_STATE_URI at one that runs") from None
        except DBAPIError as exc:
            self.dispose()
            raise StateStoreUnavailable(redact(self.uri), f"the database refused loopml's tables "
                                        f"({_first_line(exc)}); check the user's rights") from None
        return self

    def _make_engine(self) -> Engine:
        if self.dialect == "sqlite":
            return _sqlite_engine(self.uri)
        url = make_url(self.uri).set(drivername="postgresql+psycopg2")
        # a fresh connection per pool slot is checked before use: a restarted PostgreSQL costs
        # one failed transaction at most, not a pool of dead sockets
        return create_engine(url, isolation_level="SERIALIZABLE", pool_pre_ping=True, pool_size=2,
                             max_overflow=4, connect_args={"connect_timeout": 5, "application_name": "loopml"})

    def _migrate(self, con: Connection) -> int:
        if self.dialect == "postgresql":
            con.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        return migrate(con)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self.connect()
        return self._engine  # type: ignore[return-value]

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # -- transactions -----------------------------------------------------------------------
    def run(self, fn: Callable[[Connection], T]) -> T:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with self.engine.begin() as con:
                    return fn(con)
            except DBAPIError as exc:
                if attempt == MAX_ATTEMPTS or getattr(exc.orig, "pgcode", None) not in RETRY_CODES:
                    raise
                # the other transaction won: wait a little (jittered, growing) and redo ours
                time.sleep(random.uniform(0, min(0.2, 0.005 * 2 ** attempt)))
        raise AssertionError("unreachable")

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        with self.engine.begin() as con:
            yield con

    # -- session locks ----------------------------------------------------------------------
    def session_lock(self, name: str) -> "SessionLock | None":
        if self.dialect != "postgresql":
            raise NotImplementedError("SQLite has no session locks; use flock next to the file")
        # its own connection, outside the pool: the lock lives exactly as long as this
        # session, and PostgreSQL ends the session when the holder's socket closes (SIGKILL too)
        lock_engine = create_engine(self.engine.url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                                    connect_args={"connect_timeout": 5, "application_name": f"loopml {name}"})
        con = lock_engine.connect()
        try:
            key = lock_key(name)
            if not con.execute(select(func.pg_try_advisory_lock(key))).scalar():
                con.close()
                lock_engine.dispose()
                return None
        except BaseException:
            con.close()
            lock_engine.dispose()
            raise
        return SessionLock(con, lock_engine, key)


class SessionLock:
    """A held PostgreSQL advisory lock; :meth:`release` gives it back."""

    def __init__(self, con: Connection, engine: Engine, key: int) -> None:
        self._con, self._engine, self.key = con, engine, key

    def release(self) -> None:
        if self._con is None:
            return
        try:
            self._con.execute(select(func.pg_advisory_unlock(self.key)))
        except DBAPIError:
            pass  # the session is gone already: so is its lock
        finally:
            self._con.close()
            self._engine.dispose()
            self._con = None


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for an advisory lock name."""
    return int.from_bytes(hashlib.sha256(f"loopml:{name}".encode()).digest()[:8], "big", signed=True)


def _sqlite_engine(uri: str) -> Engine:
    path = make_url(uri).database
    if path and path != ":memory:":
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.exists():  # sqlite3 would create it world-readable under a default umask
            os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o600))
    # a small pool: closing the last connection of a WAL database checkpoints and fsyncs, which
    # cost a connection per transaction (as state.db did before the store) about half its time;
    # open_store keeps few stores per process, so few descriptors stay open
    engine = create_engine(uri, pool_size=2, max_overflow=8, connect_args={"timeout": 30, "isolation_level": None})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_con: Any, _record: Any) -> None:
        dbapi_con.isolation_level = None  # the driver emits no BEGIN of its own; ours is below
        cur = dbapi_con.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(con: Connection) -> None:
        # take the write lock up front: no reader-turned-writer deadlock, no "database is
        # locked" half way through a transaction
        con.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0][:200]
