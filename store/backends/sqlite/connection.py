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
    """One object per thread (``sqlite3`` connections are not shared across threads), closed without
    pulling one from under the thread that is using it.

    A thread uses its object inside ``with per_thread.use() as item:``. Closing a ``sqlite3``
    connection while another thread is inside a statement on it crashes the process, so
    :meth:`close` closes at once only the objects no thread is using (those of idle threads and
    of threads that ended) and leaves each one in use to its own thread, which closes it when its
    outermost ``use`` ends: the call in flight finishes on it. After :meth:`close` a thread's next
    ``use`` raises ``closed()``, or, when no ``closed`` was given, opens a new object (closing
    then only releases what is open).

    A thread that ends leaves its object behind: it is closed when another thread makes a new
    one (a server that starts a thread per request does not pile up open files), or by :meth:`close`.
    """

    def __init__(
        self, make: Callable[[], T], close: Callable[[T], object], closed: Callable[[], Exception] | None = None
    ) -> None:
        self._make, self._close, self._closed = make, close, closed
        self._refusal: Callable[[], Exception] | None = None  # ``closed`` once close() was called
        self._local = threading.local()
        self._slots: list[_Slot[T]] = []  # those holding an object close() has not reached yet
        self._lock = threading.Lock()

    def use(self) -> _Slot[T]:
        """This thread's object for a ``with`` block, made on first use.

        Entering the block raises ``closed()`` after :meth:`close`, unless this thread is
        already inside a use (a call in flight finishes on its object).
        """
        try:
            slot: _Slot[T] = self._local.slot
        except AttributeError:
            slot = self._local.slot = _Slot(self)
        return slot

    def get(self) -> T:
        """This thread's object, for a caller inside a :meth:`use` or alone with the object."""
        with self.use() as item:
            return item

    def close(self) -> None:
        """Close every object no thread is using now; each one in use is closed by its thread when its use ends."""
        with self._lock:
            self._refusal = self._closed
            slots, self._slots = self._slots, []
            idle = [slot.retire() for slot in slots]
        self._close_all(idle)

    def _enter(self, slot: _Slot[T]) -> T:
        """The slow way into a use: the slot has no object yet, or close() reached it (see :class:`_Slot`)."""
        with self._lock:
            item = slot.item
            if item is not None and (slot.depth > 1 or not slot.retired):
                return item  # a call in flight on this thread goes on with its object
            # No call starts on an object close() reached: it was closed, or left to this thread.
            slot.depth -= 1
            slot.item, slot.retired = None, False
            refusal = self._refusal
        self._close_all([item])
        if refusal is not None:
            raise refusal()
        item = self._make()  # outside the lock: opening may wait for the file's locks
        ended: list[T | None] = []
        with self._lock:
            refusal = self._refusal
            if refusal is None:
                slot.item = item
                slot.depth += 1
                kept = [slot]
                for other in self._slots:
                    if other.depth or other.thread.is_alive():
                        kept.append(other)
                    else:
                        ended.append(other.retire())
                self._slots = kept
        if refusal is not None:
            self._close(item)
            raise refusal()
        self._close_all(ended)
        return item

    def _exit(self, slot: _Slot[T]) -> None:
        """The slow way out of a use: the last one of an object close() left to this thread."""
        with self._lock:
            item = slot.item if not slot.depth and slot.retired else None
            if item is not None:
                slot.item, slot.retired = None, False
        self._close_all([item])

    def _close_all(self, items: list[T | None]) -> None:
        for item in items:
            if item is not None:
                self._close(item)


class _Slot(Generic[T]):
    """One thread's object, how many uses of it that thread is inside, and whether close() reached it.

    Only the owning thread changes ``depth``, and its way in and out takes no lock: it raises
    ``depth`` before it looks at ``retired``, and close() sets ``retired`` before it looks at
    ``depth`` (under the lock the slow ways take). Under the GIL one of the two sees the other's
    write: close() defers to a thread that has started to use its object, or the thread sees
    ``retired`` and takes the slow way, which never starts a call on an object close() reached.
    """

    __slots__ = ("depth", "item", "owner", "retired", "thread")

    def __init__(self, owner: PerThread[T]) -> None:
        self.owner = owner
        self.thread = threading.current_thread()
        self.item: T | None = None
        self.depth = 0
        self.retired = False

    def retire(self) -> T | None:
        """Mark the slot reached by close(); return its object to close now when no use holds it."""
        self.retired = True
        if self.depth:
            return None
        item, self.item = self.item, None
        return item

    def __enter__(self) -> T:
        self.depth += 1
        item = self.item
        if item is None or self.retired:
            return self.owner._enter(self)
        return item

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1
        if not self.depth and self.retired:
            self.owner._exit(self)
