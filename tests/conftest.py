"""Shared fixtures: every backend-independent test runs on memory, a SQLite file and PostgreSQL.

PostgreSQL tests read the server from ``CHATLEDGER_TEST_POSTGRES_URL`` (``.ci/run``
sets it, so in CI they always run); without it they skip with that reason. Each
PostgreSQL test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chatledger.store import Store, open_store
from chatledger.store.handle import Store as _Store

BACKENDS = ["memory", "sqlite", "postgres"]
REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "data" / "corpus"  # copied from the project's shared corpus, with its SOURCES.md and licences
PG_SKIP = "CHATLEDGER_TEST_POSTGRES_URL is not set: PostgreSQL tests skip (CI sets it to a real server)"


def postgres_base_url() -> str:
    """The test server's URL, or skip the test with the reason."""
    url = os.environ.get("CHATLEDGER_TEST_POSTGRES_URL")
    if not url:
        pytest.skip(PG_SKIP)
    return url


def with_search_path(url: str, schema: str) -> str:
    """The URL with libpq options that put every table in ``schema``."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose tables live in a fresh schema, dropped after the test."""
    import psycopg

    base = postgres_base_url()
    schema = f"cl_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_search_path(base, schema)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend under test."""
    return str(request.param)


@pytest.fixture
def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A URL for the backend under test (memory:// is private to each opened store)."""
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'chat.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def make_store(backend: str, store_url: str) -> Iterator[Callable[..., Store]]:
    """Open stores on one shared database (for memory, one shared recorder); all closed afterwards."""
    opened: list[Store] = []
    shared: list[Store] = []

    def make(tenant: str = "default", **kwargs: object) -> Store:
        if backend == "memory":
            if not shared:
                shared.append(open_store("memory://"))
            store = _Store(shared[0].backend, tenant=tenant, **kwargs)  # type: ignore[arg-type]
        else:
            store = open_store(store_url, tenant=tenant, **kwargs)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., Store]) -> Store:
    """A store on the backend under test, for the default tenant."""
    return make_store()
