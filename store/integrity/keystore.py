"""Deletable storage for wrapped data keys, next to each backend's events.

Keys are not events: the log is append-only, but erasure needs a key to be
gone for good. So each backend gets a small key table beside its log, handed
out by the backend (:meth:`chatledger.store.backends.Backend.key_store`):

- memory: a dict shared by every store on the same backend;
- SQLite: a ``data_keys`` table in the same file, written through the
  recorder's own per-thread connection, so a key created while a write
  transaction holds the file lock joins that transaction (a second connection
  would wait for the lock the same thread holds). ``secure_delete`` is on for
  the deletion, and the WAL is checkpointed afterwards so the key's bytes do
  not linger in freed pages or the WAL file;
- PostgreSQL: a ``data_keys`` table, through connections of the recorder's pool.

Only wrapped keys are stored (encrypted under the master key), so a copy of
this table is useless without the master key.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any, Protocol

from chatledger.store.errors import BackendUnavailable, ErasedError

__all__ = ["KeyStore", "MemoryKeyStore", "PostgresKeyStore", "SQLiteKeyStore"]


class KeyStore(Protocol):
    """Where a backend keeps wrapped data keys, one per conversation."""

    def get(self, conversation_id: str) -> bytes | None:
        """The wrapped key of a conversation; None when it has none (never had one, or erased)."""

    def add(self, conversation_id: str, wrapped: bytes) -> bytes:
        """Store a wrapped key unless one exists; return the one stored (first writer wins)."""

    def was_erased(self, conversation_id: str) -> bool:
        """True when the conversation's key was destroyed."""

    def delete(self, conversation_id: str) -> bool:
        """Destroy a conversation's key for good; True when there was one."""

    def purge(self, wait: float) -> str | None:
        """Remove every copy of destroyed keys' bytes from the backend's files, waiting up to ``wait`` s.

        Returns:
            None when no file the store writes holds a destroyed key any more; otherwise why
            that is not certain yet (another connection still needs the old bytes).
        """


class MemoryKeyStore:
    """Keys in a dict (one per backend, so stores sharing a memory backend share keys)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = {}
        self._erased: set[str] = set()

    def get(self, conversation_id: str) -> bytes | None:
        with self._lock:
            return self._keys.get(conversation_id)

    def add(self, conversation_id: str, wrapped: bytes) -> bytes:
        with self._lock:
            if conversation_id in self._erased:
                raise ErasedError(conversation_id)
            return self._keys.setdefault(conversation_id, wrapped)

    def was_erased(self, conversation_id: str) -> bool:
        with self._lock:
            return conversation_id in self._erased

    def delete(self, conversation_id: str) -> bool:
        with self._lock:
            self._erased.add(conversation_id)
            return self._keys.pop(conversation_id, None) is not None

    def purge(self, wait: float) -> str | None:
        return None


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS data_keys (
    conversation_id TEXT PRIMARY KEY,
    wrapped BLOB
) WITHOUT ROWID
"""


class SQLiteKeyStore:
    """Keys in a ``data_keys`` table of the store's SQLite file.

    An erased conversation keeps a row with a NULL key, so no later write can
    silently give it a fresh key.
    """

    def __init__(self, recorder: Any) -> None:
        self._recorder = recorder
        self._ready = False

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = self._recorder.connection
        # Zero what a delete or a page rebalance frees in the key table (a per-connection setting).
        conn.execute("PRAGMA secure_delete = ON")
        if not self._ready:
            try:
                conn.execute(_SQLITE_SCHEMA)
            except sqlite3.Error as exc:
                raise BackendUnavailable(f"creating the key table: SQLite said {exc}") from exc
            self._ready = True
        return conn

    def _row(self, conversation_id: str) -> tuple[bytes | None] | None:
        try:
            row = (
                self._conn()
                .execute("SELECT wrapped FROM data_keys WHERE conversation_id = ?", (conversation_id,))
                .fetchone()
            )
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"reading a data key: SQLite said {exc}") from exc
        return None if row is None else (row[0],)

    def get(self, conversation_id: str) -> bytes | None:
        row = self._row(conversation_id)
        return None if row is None or row[0] is None else bytes(row[0])

    def add(self, conversation_id: str, wrapped: bytes) -> bytes:
        try:
            self._conn().execute(
                "INSERT OR IGNORE INTO data_keys (conversation_id, wrapped) VALUES (?, ?)",
                (conversation_id, wrapped),
            )
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"storing a data key: SQLite said {exc}") from exc
        row = self._row(conversation_id)
        if row is None or row[0] is None:
            raise ErasedError(conversation_id)
        return bytes(row[0])

    def was_erased(self, conversation_id: str) -> bool:
        row = self._row(conversation_id)
        return row is not None and row[0] is None

    def delete(self, conversation_id: str) -> bool:
        conn = self._conn()
        had = self.get(conversation_id) is not None
        try:
            conn.execute(
                "INSERT INTO data_keys (conversation_id, wrapped) VALUES (?, NULL) "
                "ON CONFLICT (conversation_id) DO UPDATE SET wrapped = NULL",
                (conversation_id,),
            )
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"deleting a data key: SQLite said {exc}") from exc
        return had

    def purge(self, wait: float) -> str | None:
        """Checkpoint the WAL into the file and truncate it: the key's old page versions leave the -wal.

        A connection reading an older snapshot still needs those frames, so the checkpoint waits
        for it (up to ``wait``) and otherwise reports that it could not finish.
        """
        conn = self._conn()
        if conn.in_transaction:
            return "this thread's write transaction is still open"
        try:
            timeout = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
            conn.execute(f"PRAGMA busy_timeout = {max(0, int(wait * 1000))}")
            try:
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                conn.execute(f"PRAGMA busy_timeout = {timeout}")
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"checkpointing after erasing a data key: SQLite said {exc}") from exc
        if busy:
            return (
                f"another connection to {self._recorder.path} holds a read snapshot (or a write), so the "
                "key's old page versions stay in its -wal file until it ends"
            )
        return None


_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS data_keys (
    conversation_id TEXT PRIMARY KEY,
    wrapped BYTEA
)
"""


class PostgresKeyStore:
    """Keys in a ``data_keys`` table on the store's PostgreSQL database.

    It borrows connections from the recorder's pool (:meth:`PostgresRecorder.connection`), one
    short transaction per call; a key created during a write commits on its own (an orphan key
    left by a rolled-back write is harmless).
    """

    def __init__(self, recorder: Any) -> None:
        self._recorder = recorder
        self._ready = False
        self._erased_in: list[str] = []  # transactions that destroyed keys not yet purged

    def _execute(self, sql: str, params: tuple[Any, ...], *, fetch: bool = False) -> list[Any]:
        with self._recorder.connection() as conn:
            if not self._ready:
                conn.execute(_PG_SCHEMA)
                self._ready = True
            cur = conn.execute(sql, params)
            return list(cur.fetchall()) if fetch else []

    def _row(self, conversation_id: str) -> tuple[bytes | None] | None:
        rows = self._execute("SELECT wrapped FROM data_keys WHERE conversation_id = %s", (conversation_id,), fetch=True)
        return (rows[0][0],) if rows else None

    def get(self, conversation_id: str) -> bytes | None:
        row = self._row(conversation_id)
        return None if row is None or row[0] is None else bytes(row[0])

    def add(self, conversation_id: str, wrapped: bytes) -> bytes:
        self._execute(
            "INSERT INTO data_keys (conversation_id, wrapped) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (conversation_id, wrapped),
        )
        row = self._row(conversation_id)
        if row is None or row[0] is None:
            raise ErasedError(conversation_id)
        return bytes(row[0])

    def was_erased(self, conversation_id: str) -> bool:
        row = self._row(conversation_id)
        return row is not None and row[0] is None

    def delete(self, conversation_id: str) -> bool:
        had = self.get(conversation_id) is not None
        (row,) = self._execute(
            "INSERT INTO data_keys (conversation_id, wrapped) VALUES (%s, NULL) "
            "ON CONFLICT (conversation_id) DO UPDATE SET wrapped = NULL RETURNING pg_current_xact_id()::xid::text",
            (conversation_id,),
            fetch=True,
        )
        self._erased_in.append(str(row[0]))
        return had

    def purge(self, wait: float) -> str | None:
        """Rewrite the key table (``VACUUM FULL``) once no snapshot can still see a destroyed key.

        The old row version of a destroyed key stays in the table's file as a dead tuple until
        it is vacuumed, and a plain VACUUM only marks its space free. A transaction whose
        snapshot is older than the erasure keeps that version alive (VACUUM FULL copies it),
        so this waits, up to ``wait``, for every such snapshot in the database to end.
        """
        deadline = time.monotonic() + wait
        xids = list(self._erased_in)
        if xids and not self._execute(_SEES_ALL_SESSIONS, (), fetch=True)[0][0]:
            return (
                "this database role cannot see other sessions' snapshots (pg_stat_activity), so it cannot "
                "tell when the key's old row version is gone: grant it pg_read_all_stats"
            )
        while xids:
            blocking = self._execute(_OLDER_SNAPSHOTS, (xids[-1], xids[-1], xids[-1]), fetch=True)[0][0]
            if not blocking:
                break
            if time.monotonic() >= deadline:
                return (
                    f"{blocking} transaction(s) or replication slot(s) of the database hold a snapshot from "
                    "before the erasure, so the key's old row version cannot be removed yet"
                )
            time.sleep(0.05)
        millis = max(1, int((deadline - time.monotonic()) * 1000))
        try:
            with self._recorder.autocommit() as conn:
                conn.execute(f"SET lock_timeout = {millis}")
                try:
                    conn.execute("VACUUM FULL data_keys")
                finally:
                    conn.execute("RESET lock_timeout")  # the connection goes back to the pool
        except BackendUnavailable as exc:
            return f"the key table could not be rewritten ({exc})"
        del self._erased_in[: len(xids)]
        return None


_SEES_ALL_SESSIONS = """
SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') FROM pg_roles WHERE rolname = current_user
"""

_OLDER_SNAPSHOTS = """
SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
        AND backend_xmin IS NOT NULL AND age(backend_xmin) >= age(%s::xid))
     + (SELECT count(*) FROM pg_replication_slots WHERE (xmin IS NOT NULL AND age(xmin) >= age(%s::xid))
        OR (catalog_xmin IS NOT NULL AND age(catalog_xmin) >= age(%s::xid)))
"""
