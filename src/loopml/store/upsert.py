"""Insert-or-update in the dialect of the connection (both back ends spell it
``INSERT ... ON CONFLICT (keys) DO UPDATE``, through different SQLAlchemy constructs)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table


def upsert(con, table: Table, keys: dict[str, Any], values: dict[str, Any]) -> None:
    if con.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table).values(**keys, **values)
    con.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=values))
