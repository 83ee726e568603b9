"""The shipped backend contract (chatledger.store.testing) on a SQLite file."""

from __future__ import annotations

import tempfile
from pathlib import Path

from chatledger.store import testing
from chatledger.store.backends.sqlite import SQLiteBackend


class TestSQLiteBackend(testing.BackendTestCase):
    """A SQLite file passes the backend contract, also with two backend objects on one file."""

    def create_backend(self) -> SQLiteBackend:
        self._dir = tempfile.TemporaryDirectory()
        self.addCleanup(self._dir.cleanup)
        return SQLiteBackend.from_url(f"sqlite:///{Path(self._dir.name) / 'chat.db'}")

    def open_again(self) -> SQLiteBackend:
        return SQLiteBackend.from_url(f"sqlite:///{Path(self._dir.name) / 'chat.db'}")
