"""Tools the executor tests run, in this process or in worker subprocesses.

Every tool counts its runs in a SQLite file named by ``$CHATLEDGER_TEST_COUNTERS``
(one row per idempotency key), so a test can see from outside how often each call
really ran, even across processes that were killed.
"""

from __future__ import annotations

import os
import sqlite3
import time

from chatledger.store import ToolRegistry, current_idempotency_key


def counters_path() -> str:
    """The counter file of the running test."""
    return os.environ["CHATLEDGER_TEST_COUNTERS"]


def bump(path: str | None = None) -> int:
    """Count one run under the current idempotency key; return the new count."""
    key = current_idempotency_key()
    assert key is not None, "tools run with an idempotency key"
    conn = sqlite3.connect(path or counters_path(), timeout=60, isolation_level=None)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS runs (key TEXT PRIMARY KEY, n INTEGER NOT NULL)")
        conn.execute("INSERT INTO runs VALUES (?, 1) ON CONFLICT (key) DO UPDATE SET n = n + 1", (key,))
        return int(conn.execute("SELECT n FROM runs WHERE key = ?", (key,)).fetchone()[0])
    finally:
        conn.close()


def read_counts(path: str) -> dict[str, int]:
    """Every idempotency key's run count."""
    if not os.path.exists(path):
        return {}
    conn = sqlite3.connect(path, timeout=60)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS runs (key TEXT PRIMARY KEY, n INTEGER NOT NULL)")
        return {k: n for k, n in conn.execute("SELECT key, n FROM runs")}
    finally:
        conn.close()


registry = ToolRegistry()


@registry.register
def count(item: int) -> str:
    """Count a run and echo the item."""
    bump()
    return f"item {item}"


@registry.register(idempotent=True)
def slow_idempotent(seconds: float) -> str:
    """Count a run; the first run of a call hangs (long enough to be killed), later ones return."""
    if bump() == 1:
        time.sleep(seconds)
    return "done"


@registry.register
def slow_once(seconds: float) -> str:
    """Like slow_idempotent, but not idempotent: after a crash it must never run again."""
    if bump() == 1:
        time.sleep(seconds)
    return "done"


@registry.register
def brief(item: int) -> str:
    """Count a run, pause a few milliseconds (long against a tiny lease), echo the item."""
    bump()
    time.sleep(0.004)
    return f"item {item}"


@registry.register(idempotent=True)
def brief_idempotent(item: int) -> str:
    """Like brief, but idempotent: a lost lease would make it run again."""
    bump()
    time.sleep(0.004)
    return f"item {item}"
