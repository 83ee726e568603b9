"""Fixtures of the PostgreSQL backend's tests."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from chatledger.store import open_store
from chatledger.store.handle import Store

from .helpers import DroppingProxy


@pytest.fixture
def proxied(postgres_url: str) -> Iterator[tuple[Store, DroppingProxy]]:
    """A store whose only connection runs through a proxy that can drop traffic."""
    parts = urlsplit(postgres_url)
    proxy = DroppingProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    url = postgres_url.replace(f"{parts.hostname}:{parts.port or 5432}", f"127.0.0.1:{proxy.port}", 1)
    store = open_store(url, pool_min=1, pool_max=1, timeout=5)
    yield store, proxy
    store.close()
    proxy.close()
