"""The shipped backend contract (chatledger.store.testing) on PostgreSQL, in a fresh schema per test."""

from __future__ import annotations

import uuid

import psycopg

from chatledger.store import testing
from chatledger.store.backends.postgres import PostgresBackend

from ...conftest import postgres_base_url, with_search_path


class TestPostgresBackend(testing.BackendTestCase):
    """PostgreSQL passes the backend contract, also with two backend objects (two pools) on one schema."""

    def create_backend(self) -> PostgresBackend:
        base, schema = postgres_base_url(), f"cl_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        self.addCleanup(_drop, base, schema)
        self._url = with_search_path(base, schema)
        return PostgresBackend.from_url(self._url)

    def open_again(self) -> PostgresBackend:
        return PostgresBackend.from_url(self._url)


def _drop(base: str, schema: str) -> None:
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
