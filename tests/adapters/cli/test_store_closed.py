"""Each CLI command closes the store it opened."""

from __future__ import annotations

import importlib
import sqlite3
from pathlib import Path

import pytest

from chatledger.adapters.cli import main
from chatledger.store import Store, open_store


def test_a_command_closes_the_store_it_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a command returns, every store it opened is closed: none of their connections is left open."""
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    with open_store(url) as store:
        conv = store.start_conversation("c1")
        store.append(conv, [{"role": "user", "content": "hello"}])
    connections: list[sqlite3.Connection] = []

    def recording_open(url: str | None = None, **options: object) -> Store:
        store = open_store(url, **options)  # type: ignore[arg-type]
        connections.append(store.recorder.connection)  # type: ignore[attr-defined]
        return store

    monkeypatch.setattr(importlib.import_module("chatledger.adapters.cli.main"), "open_store", recording_open)
    for command in (["show", "c1"], ["export"], ["verify"]):
        assert main(["--db", url, *command]) == 0
    assert len(connections) == 3
    for conn in connections:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")
