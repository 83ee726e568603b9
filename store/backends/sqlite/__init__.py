"""The SQLite backend of the log: one database file, WAL, many processes on one machine (``sqlite:///path.db``)."""

from chatledger.store.backends.sqlite.backend import SQLiteBackend
from chatledger.store.backends.sqlite.recorder import SQLiteRecorder

__all__ = ["SQLiteBackend", "SQLiteRecorder"]
