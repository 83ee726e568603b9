"""Fixtures of the AgentChat adapter tests: a SQLite file store and a side-effect counter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chatledger.store import Store, open_store


@pytest.fixture(autouse=True)
def effects_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh side-effect counter file for each test (child processes inherit it)."""
    path = tmp_path / "effects.db"
    monkeypatch.setenv("CHATLEDGER_TEST_EFFECTS", str(path))
    return path


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A SQLite file store URL."""
    return f"sqlite:///{tmp_path / 'chat.db'}"


@pytest.fixture
def sqlite_store(db_url: str) -> Iterator[Store]:
    """A store on a SQLite file."""
    store = open_store(db_url)
    yield store
    store.close()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (AgentChat's loop)."""
    return "asyncio"
