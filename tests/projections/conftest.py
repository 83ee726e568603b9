"""Fixtures for the projection tests: file-backed URLs for multi-process tests, and a log filler."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatledger.store import Store

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL that several processes can open: a SQLite file or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chat.db'}"
    return str(request.getfixturevalue("postgres_url"))


def fill(store: Store, conversations: int = 10, messages: int = 9, prefix: str = "c") -> int:
    """Append ``conversations`` conversations of ``messages`` messages; return the events written."""
    for c in range(conversations):
        conv = store.start_conversation(f"{prefix}{c}", metadata={"n": c})
        batch = [
            {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} of {conv}: refund policy"}
            for i in range(messages)
        ]
        store.append(conv, batch)
    return conversations * (messages + 1)


def worker(*args: str) -> subprocess.Popen[str]:
    """Start ``tests.projections.worker`` in a subprocess (stdout captured)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.projections.worker", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
