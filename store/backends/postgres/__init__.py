"""The PostgreSQL backend of the log: many workers on many machines (``postgresql://user@host/db``)."""

from chatledger.store.backends.postgres.backend import PostgresBackend
from chatledger.store.backends.postgres.recorder import PostgresRecorder

__all__ = ["PostgresBackend", "PostgresRecorder"]
