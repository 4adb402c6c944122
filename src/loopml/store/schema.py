"""Every table of the state store, in SQLAlchemy Core, and the migration run at open.

The SQLite layout is the one ``state.db`` always had (same names, types and the partial
unique index), so an existing workspace opens unchanged: ``create_all`` only adds what is
missing. ``schema_version`` says which layout a database has; a database written by a
newer loopml is refused rather than misread.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, MetaData, Table, Text, select, text

from loopml.errors import StateStoreUnavailable

VERSION = 3  # 1: state, alerts, policies, holders; 2: + audit; 3: + tokens
ACTIVE = ("running", "paused", "promoting", "rolling_back")

metadata = MetaData()

schema_version = Table("schema_version", metadata, Column("version", Integer, nullable=False))

rollouts = Table(
    "rollouts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", Text, nullable=False),
    Column("challenger", Text, nullable=False),
    Column("champion", Text),
    Column("status", Text, nullable=False),
    Column("step", Integer, nullable=False, server_default=text("0")),
    Column("step_started", Float, nullable=False),
    Column("baseline", Text, nullable=False, server_default=text("'{}'")),
    Column("decisions", Text, nullable=False, server_default=text("'[]'")),
    Column("trigger_id", Integer),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
    sqlite_autoincrement=True,  # ids are never reused: audit records name rollouts by id
)
# "at most one active rollout per model" is a fact of the database on both back ends
_active = rollouts.c.status.in_(ACTIVE)
Index("one_active_rollout", rollouts.c.model, unique=True, sqlite_where=_active, postgresql_where=_active)

triggers = Table(
    "triggers", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("cause", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
    Column("result", Text),
    sqlite_autoincrement=True,
)

kv = Table("kv", metadata, Column("key", Text, primary_key=True), Column("value", Text, nullable=False))

retries = Table(
    "retries", metadata,
    Column("model", Text, primary_key=True),
    Column("cause", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("failures", Integer, nullable=False),
    Column("next_try", Float, nullable=False),
    Column("waiting", Integer, nullable=False),
    Column("error", Text),
    Column("updated", Float, nullable=False),
)

alert_state = Table(
    "alert_state", metadata,
    Column("rule", Text, primary_key=True),
    Column("model", Text, primary_key=True),
    Column("status", Text, nullable=False),
    Column("breaches", Integer, nullable=False),
    Column("value", Float), Column("since", Float), Column("last_notified", Float),
    Column("last_window_end", Float), Column("updated", Float),
)

alert_events = Table(
    "alert_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rule", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("value", Float), Column("threshold", Float), Column("severity", Text), Column("message", Text),
    Column("ts", Float), Column("window_end", Float),
    Column("delivered", Integer, nullable=False, server_default=text("0")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text),
    sqlite_autoincrement=True,
)
Index("alert_events_pending", alert_events.c.delivered, alert_events.c.id)

# traffic policies: one row per model; ``version`` grows on every change so that every
# replica polling the table applies the same policy (and notices a change by one integer)
policies = Table(
    "policies", metadata,
    Column("model", Text, primary_key=True),
    Column("policy", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated", Float, nullable=False),
)

# who holds a session lock (the controller): what a second ``loopml up`` names
holders = Table(
    "holders", metadata,
    Column("name", Text, primary_key=True),
    Column("info", Text, nullable=False),
)


# the audit log's record of truth (``<home>/audit.jsonl`` stays, as this machine's export)
audit = Table(
    "audit", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("model", Text, nullable=False),
    Column("alias", Text, nullable=False),
    Column("version", Text), Column("previous", Text),
    Column("who", Text, nullable=False),
    Column("why", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("evidence", Text),  # JSON
    sqlite_autoincrement=True,
)
Index("audit_by_model", audit.c.model, audit.c.id)

# named API tokens (see loopml.store.tokens): only a salted SHA-256 of each secret is kept;
# ``id`` is the token's public part, so a look-up is one primary-key read, never a scan
tokens = Table(
    "tokens", metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("role", Text, nullable=False),
    Column("salt", Text, nullable=False),
    Column("hash", Text, nullable=False),
    Column("created", Float, nullable=False),
    Column("last_used", Float),
)


def migrate(con) -> int:
    """Create what is missing and record the layout's version; refuse a newer one."""
    metadata.create_all(con, checkfirst=True)
    found = con.execute(select(schema_version.c.version)).scalar()
    if found is None:
        con.execute(schema_version.insert().values(version=VERSION))
    elif found > VERSION:
        raise StateStoreUnavailable(
            str(con.engine.url.render_as_string(hide_password=True)),
            f"schema version {found} is newer than this loopml understands ({VERSION}); upgrade loopml")
    elif found < VERSION:
        con.execute(schema_version.update().values(version=VERSION))
    return VERSION
