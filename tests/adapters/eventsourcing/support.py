"""What the eventsourcing test cases need: a chatledger store per test, on SQLite, PostgreSQL or memory.

eventsourcing's cases are ``unittest.TestCase`` classes that call ``create_recorder()``;
a :class:`StoreCase` subclass opens a fresh store in ``setUp`` (a new SQLite file, a new
PostgreSQL schema dropped afterwards, or a new in-memory store) and closes it in ``tearDown``.
"""

from __future__ import annotations

import os
import tempfile
import threading
import unittest
import uuid
from typing import ClassVar

from chatledger.store import Store, open_store

PG_SKIP = "CHATLEDGER_TEST_POSTGRES_URL is not set: PostgreSQL tests skip (CI sets it to a real server)"


def with_search_path(url: str, schema: str) -> str:
    """The URL with libpq options that put every table in ``schema``."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


class StoreCase(unittest.TestCase):
    """Opens ``self.url`` (a fresh database of ``backend``) before each test and cleans it up after."""

    backend: ClassVar[str] = "sqlite"
    __test__ = False  # pytest collects every TestCase: only the per-backend subclasses run

    def setUp(self) -> None:
        # No super().setUp(): a case class that needs the URL in its own setUp calls this first.
        self._threads = set(threading.enumerate())
        self._stores: list[Store] = []
        self._schema: str | None = None
        if self.backend == "memory":
            self.url = "memory://"
        elif self.backend == "sqlite":
            folder = tempfile.TemporaryDirectory()
            self.addCleanup(folder.cleanup)
            self.url = f"sqlite:///{folder.name}/es.db"
        else:
            base = os.environ.get("CHATLEDGER_TEST_POSTGRES_URL")
            if not base:
                self.skipTest(PG_SKIP)
            import psycopg

            schema = f"cl_es_{uuid.uuid4().hex[:12]}"
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{schema}"')
            self._schema, self._base = schema, base
            self.url = with_search_path(base, schema)

    def open(self) -> Store:
        """A store on this test's database, closed after the test."""
        store = open_store(self.url)
        self._stores.append(store)
        return store

    def tearDown(self) -> None:
        # Some of eventsourcing's cases leave reader threads finishing their last read (they are
        # told to stop, never joined): closing a store under a running query would crash SQLite.
        for thread in set(threading.enumerate()) - self._threads:
            if not thread.daemon:
                thread.join(timeout=30)
        for store in self._stores:
            store.close()
        if self._schema is not None:
            import psycopg

            with psycopg.connect(self._base, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self._schema}" CASCADE')


SUFFIXES = {"sqlite": "SQLite", "postgres": "Postgres", "memory": "Memory"}


def per_backend(module: str, bases: dict[str, type], backends: tuple[str, ...]) -> dict[str, type]:
    """A ``Test<Name><Backend>`` subclass of each base for each backend, to put in a test module's globals."""
    return {
        f"Test{name}{SUFFIXES[backend]}": type(
            f"Test{name}{SUFFIXES[backend]}", (base,), {"backend": backend, "__module__": module, "__test__": True}
        )
        for backend in backends
        for name, base in bases.items()
    }
