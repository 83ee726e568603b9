"""SQLite backend: one database file, WAL, many processes on one machine.

Writes take the database write lock up front (``BEGIN IMMEDIATE``) so that a
transaction which reads a stream head and then writes can never fail half-way
with ``SQLITE_BUSY_SNAPSHOT``; the busy timeout makes concurrent writers, in
this process or another, queue for the lock instead of failing. Because
writers are serialised by that lock, the rowid (``position``) is assigned in
commit order, so a reader that asks for ``position > last`` never skips an
event that commits late.

Each thread gets its own connection (``sqlite3`` connections are not shared
across threads); all are closed by :meth:`SQLiteRecorder.close`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

from .errors import BackendUnavailable, ConflictError, ValidationError
from .recorder import NewRecord, Record, StreamHead

__all__ = ["SCHEMA", "PerThread", "SQLiteRecorder", "connect"]

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY,
    stream_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    conversation_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    key TEXT,
    recorded_at TEXT NOT NULL,
    payload TEXT NOT NULL,
    hash TEXT NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS events_stream_key ON events (stream_id, key) WHERE key IS NOT NULL;
CREATE TABLE IF NOT EXISTS streams (
    stream_id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    version INTEGER NOT NULL,
    head_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    status TEXT,
    lease_until REAL,
    metadata TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS streams_by_kind ON streams (kind, tenant, created_at);
CREATE INDEX IF NOT EXISTS streams_by_conversation ON streams (conversation_id, kind);
CREATE INDEX IF NOT EXISTS streams_by_status ON streams (kind, status, lease_until) WHERE status IS NOT NULL;
"""

_RECORD_COLUMNS = (
    "position, stream_id, version, conversation_id, tenant, event_id, type, schema_version, key, "
    "recorded_at, payload, hash"
)
_HEAD_COLUMNS = (
    "stream_id, conversation_id, tenant, kind, version, head_hash, created_at, updated_at, status, "
    "lease_until, metadata"
)


def _translate(exc: sqlite3.Error, what: str) -> Exception:
    if isinstance(exc, sqlite3.IntegrityError):
        return ConflictError(f"{what}: {exc}")
    if isinstance(exc, sqlite3.DataError):
        return ValidationError("payload", str(exc))
    return BackendUnavailable(f"{what}: SQLite said {exc}")


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


class _Tx:
    """A write transaction on one connection that holds the write lock."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def head(self, stream_id: str) -> StreamHead | None:
        row = self._conn.execute(
            f"SELECT {_HEAD_COLUMNS} FROM streams WHERE stream_id = ?", (stream_id,)
        ).fetchone()
        return StreamHead(*row) if row else None

    def create_stream(self, head: StreamHead) -> None:
        try:
            self._conn.execute(f"INSERT INTO streams ({_HEAD_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", head.as_row())
        except sqlite3.IntegrityError:
            raise ConflictError(f"stream {head.stream_id!r} exists already") from None

    def records_by_keys(self, stream_id: str, keys: Sequence[str]) -> dict[str, Record]:
        if not keys:
            return {}
        found: dict[str, Record] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM events WHERE stream_id = ? AND key IN ({marks})",
                (stream_id, *chunk),
            ).fetchall()
            for row in rows:
                rec = Record(*row)
                found[str(rec.key)] = rec
        return found

    def insert(self, records: Sequence[NewRecord]) -> list[int]:
        positions = []
        sql = (
            "INSERT INTO events (stream_id, version, conversation_id, tenant, event_id, type, "
            "schema_version, key, recorded_at, payload, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
        )
        for r in records:
            cur = self._conn.execute(sql, r.as_row())
            positions.append(int(cur.lastrowid or 0))
        return positions

    def update_head(
        self,
        stream_id: str,
        version: int,
        head_hash: str,
        updated_at: str,
        status: str | None,
        lease_until: float | None,
    ) -> None:
        self._conn.execute(
            "UPDATE streams SET version = ?, head_hash = ?, updated_at = ?, status = ?, lease_until = ? "
            "WHERE stream_id = ?",
            (version, head_hash, updated_at, status, lease_until, stream_id),
        )


class SQLiteRecorder:
    """The SQLite implementation of :class:`~chatledger.store.recorder.Recorder`."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        busy_timeout_ms: int = 30_000,
    ) -> None:
        sync = synchronous.upper()
        if sync not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValidationError("synchronous", f"must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}")
        self.path = str(path)
        self.synchronous = sync
        self.busy_timeout_ms = busy_timeout_ms
        self._conns: PerThread[sqlite3.Connection] = PerThread(self._open, sqlite3.Connection.close)
        conn = self._conn()
        try:
            conn.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise _translate(exc, "creating the schema") from exc

    def _conn(self) -> sqlite3.Connection:
        return self._conns.get()

    def _open(self) -> sqlite3.Connection:
        try:
            return connect(self.path, busy_timeout_ms=self.busy_timeout_ms, synchronous=self.synchronous)
        except sqlite3.Error as exc:
            raise _translate(exc, f"opening {self.path}") from exc

    @property
    def connection(self) -> sqlite3.Connection:
        """This thread's connection (read models share the file through it)."""
        return self._conn()

    @contextmanager
    def write(self) -> Iterator[_Tx]:
        """Open a write transaction holding the database write lock."""
        conn = self._conn()
        if conn.in_transaction:
            raise RuntimeError("chatledger write transactions do not nest")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _translate(exc, "starting a write") from exc
        try:
            yield _Tx(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise _translate(exc, "committing") from exc

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _translate(exc, "reading") from exc

    def read_stream(self, stream_id: str, after: int = 0, limit: int | None = None) -> list[Record]:
        rows = self._query(
            f"SELECT {_RECORD_COLUMNS} FROM events WHERE stream_id = ? AND version > ? "
            "ORDER BY version LIMIT ?",
            (stream_id, after, -1 if limit is None else limit),
        )
        return list(map(Record._make, rows))

    def read_payloads(self, stream_id: str, type_name: str, upto: int | None = None) -> list[str]:
        rows = self._query(
            "SELECT payload FROM events WHERE stream_id = ? AND version <= ? AND type = ? ORDER BY version",
            (stream_id, (1 << 62) if upto is None else upto, type_name),
        )
        return [row[0] for row in rows]

    def read_all(self, after: int = 0, limit: int | None = None, tenant: str | None = None) -> list[Record]:
        if tenant is None:
            rows = self._query(
                f"SELECT {_RECORD_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?",
                (after, -1 if limit is None else limit),
            )
        else:
            rows = self._query(
                f"SELECT {_RECORD_COLUMNS} FROM events WHERE position > ? AND tenant = ? "
                "ORDER BY position LIMIT ?",
                (after, tenant, -1 if limit is None else limit),
            )
        return list(map(Record._make, rows))

    def iter_all(self, after: int = 0, batch: int = 1000, tenant: str | None = None) -> Iterator[Record]:
        while True:
            page = self.read_all(after, batch, tenant)
            yield from page
            if len(page) < batch:
                return
            after = page[-1].position

    def get_head(self, stream_id: str) -> StreamHead | None:
        rows = self._query(f"SELECT {_HEAD_COLUMNS} FROM streams WHERE stream_id = ?", (stream_id,))
        return StreamHead(*rows[0]) if rows else None

    def list_heads(
        self,
        kind: str,
        tenant: str | None,
        limit: int | None = None,
        status: Sequence[str] | None = None,
        conversation_id: str | None = None,
    ) -> list[StreamHead]:
        where = ["kind = ?"]
        params: list[Any] = [kind]
        if tenant is not None:
            where.append("tenant = ?")
            params.append(tenant)
        if status:
            where.append(f"status IN ({','.join('?' * len(status))})")
            params.extend(status)
        if conversation_id is not None:
            where.append("conversation_id = ?")
            params.append(conversation_id)
        params.append(-1 if limit is None else limit)
        rows = self._query(
            f"SELECT {_HEAD_COLUMNS} FROM streams WHERE {' AND '.join(where)} "
            "ORDER BY created_at, stream_id LIMIT ?",
            params,
        )
        return [StreamHead(*row) for row in rows]

    def last_position(self) -> int:
        rows = self._query("SELECT COALESCE(MAX(position), 0) FROM events", ())
        return int(rows[0][0])

    def close(self) -> None:
        self._conns.close()
