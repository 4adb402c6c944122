"""loopml's transactional state behind one interface: SQLite in the workspace by default,
PostgreSQL on the platform (``LOOPML_STATE_URI``). See :mod:`loopml.store.base`."""

from loopml.store.base import Store, open_store, redact

__all__ = ["Store", "open_store", "redact"]
