"""Connections to a chatledger SQLite file: how each is opened (WAL, busy timeout, autocommit), one per thread.

The log's recorder and the read models' file (``chatledger.projections.backends.sqlite``) open
their connections the same way, through :func:`connect` and :class:`PerThread`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from chatledger.store.errors import BackendUnavailable

__all__ = ["PerThread", "connect"]

T = TypeVar("T")


def connect(path: str, *, busy_timeout_ms: int, synchronous: str) -> sqlite3.Connection:
    """Open a connection as every chatledger SQLite file wants it: WAL, a busy timeout, autocommit.

    Two processes opening a new file at once both ask for WAL; the switch needs an
    exclusive lock and SQLite reports "database is locked" at once instead of calling
    the busy handler, so the switch is retried until the busy timeout.

    Raises:
        BackendUnavailable: the file could not be put in WAL mode.
        sqlite3.Error: the caller translates it.
    """
    conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    deadline = time.monotonic() + busy_timeout_ms / 1000
    while mode.lower() != "wal":
        try:
            mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
            continue
        if path != ":memory:" and mode.lower() != "wal":
            conn.close()
            raise BackendUnavailable(f"could not switch {path} to WAL (journal_mode={mode})")
        break
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


class PerThread(Generic[T]):
    """One object per thread (``sqlite3`` connections are not shared across threads), all closed together."""

    def __init__(self, make: Callable[[], T], close: Callable[[T], object]) -> None:
        self._make, self._close = make, close
        self._local = threading.local()
        self._all: list[T] = []
        self._lock = threading.Lock()

    def get(self) -> T:
        """This thread's object, made on first use."""
        item: T | None = getattr(self._local, "item", None)
        if item is None:
            item = self._local.item = self._make()
            with self._lock:
                self._all.append(item)
        return item

    def close(self) -> None:
        """Close every thread's object; later calls of :meth:`get` make new ones."""
        with self._lock:
            for item in self._all:
                self._close(item)
            self._all.clear()
        self._local = threading.local()
