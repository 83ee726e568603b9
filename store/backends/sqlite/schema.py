"""The SQLite layout of the log, and the conversions between stored and exchanged forms.

Every append writes three b-trees and nothing else: the ``events`` row (keyed by
its global ``position``), the unique ``(sid, version)`` index that settles
optimistic concurrency, and, for an event with an idempotency key, the unique
``(sid, key)`` index. A stream's head (version, last hash, last time) is its
last event, read through ``(sid, version)``; the ``streams`` row holds only
what never changes (id, conversation, tenant, kind, creation, metadata) and
the tool ledger's status and lease. Rows are small on purpose: a stream is an
integer (``sid``), a type is an integer (``event_types``), event ids and hashes
are stored as bytes, times as microseconds since the epoch, and a message's id
lives in the ``key`` column, not again in its payload.

Reads hand the upper layers the same text forms every backend uses (hex ids and
hashes, ISO-8601 times, type names); the SQL below converts in the database.
Values that do not have the compact form (an id that is not 32 lowercase hex
digits, a time that is not UTC) are stored as text and read back as stored.

Triggers refuse any UPDATE or DELETE of an event, the deletion of a stream and
any change to a stream but its tool-call status and lease: the log is
append-only in the file itself, not only in the API. Stream ids are never
reused (``AUTOINCREMENT``), so events can never be adopted by a later stream.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

from chatledger.store.backends.recorder import Record

__all__ = [
    "HEAD_SELECT",
    "LAYOUT_VERSION",
    "RECORD_SELECT",
    "SCHEMA",
    "create_schema",
    "hex_sql",
    "hex_text",
    "iso_sql",
    "iso_text",
    "migrate_v1",
    "migrate_v2",
    "record",
    "stored_bytes",
    "stored_time",
]

LAYOUT_VERSION = 3
"""``PRAGMA user_version`` of a file in this layout (1 was the first, text-only layout; 3 added
``streams.substreams``, a conversation's record of its tool-call and side streams)."""

_STATEMENTS = """
CREATE TABLE IF NOT EXISTS streams (
    sid INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at TEXT NOT NULL,
    status TEXT,
    lease_until REAL,
    metadata TEXT,
    substreams TEXT
);
CREATE INDEX IF NOT EXISTS streams_by_kind ON streams (kind, tenant, created_at);
CREATE INDEX IF NOT EXISTS streams_by_conversation ON streams (conversation_id, kind);
CREATE INDEX IF NOT EXISTS streams_by_status ON streams (kind, status, lease_until) WHERE status IS NOT NULL;
CREATE TABLE IF NOT EXISTS event_types (
    code INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY,
    sid INTEGER NOT NULL,
    version INTEGER NOT NULL,
    type INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    event_id BLOB NOT NULL,
    key TEXT,
    recorded_at INTEGER NOT NULL,
    payload TEXT NOT NULL,
    hash BLOB NOT NULL,
    UNIQUE (sid, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS events_stream_key ON events (sid, key) WHERE key IS NOT NULL;
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'chatledger events are append-only: an event is never updated'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'chatledger events are append-only: an event is never deleted'); END;
CREATE TRIGGER IF NOT EXISTS events_not_erased BEFORE INSERT ON events
WHEN (SELECT status FROM streams WHERE sid = NEW.sid) = 'erased'
BEGIN SELECT RAISE(ABORT, 'chatledger: the conversation was erased'); END;
CREATE TRIGGER IF NOT EXISTS streams_no_delete BEFORE DELETE ON streams
BEGIN SELECT RAISE(ABORT, 'chatledger streams are never deleted'); END;
CREATE TRIGGER IF NOT EXISTS streams_fixed BEFORE UPDATE OF sid, stream_id, conversation_id, tenant, kind, created_at,
metadata ON streams
BEGIN SELECT RAISE(ABORT, 'chatledger streams only change their tool-call status and lease'); END
"""
_SPLIT = "\n\n"
SCHEMA = _STATEMENTS.replace(";\nCREATE", ";" + _SPLIT + "CREATE").replace("\nBEGIN SELECT", " BEGIN SELECT")
"""The statements creating the layout, separated by blank lines (triggers hold semicolons)."""


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the tables, indexes and triggers that are missing, in the caller's transaction."""
    for statement in SCHEMA.split(_SPLIT):
        if statement.strip():
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {LAYOUT_VERSION}")


def migrate_v1(conn: sqlite3.Connection) -> None:
    """Bring a file of the first layout (every column text, heads stored) to this one, in place.

    Runs in the caller's transaction: all of it is done, or none. Stored values keep
    their text forms' meaning exactly (the hash chains verify unchanged); what the old
    layout repeated on every event (conversation, tenant) now comes from the stream.
    """
    for name in ("events_stream_key", "streams_by_kind", "streams_by_conversation", "streams_by_status"):
        conn.execute(f"DROP INDEX IF EXISTS {name}")
    conn.execute("ALTER TABLE events RENAME TO events_v1")
    conn.execute("ALTER TABLE streams RENAME TO streams_v1")
    create_schema(conn)
    conn.create_function("chatledger_bytes", 2, stored_bytes, deterministic=True)
    conn.create_function("chatledger_time", 1, stored_time, deterministic=True)
    conn.execute(
        "INSERT INTO streams (stream_id, conversation_id, tenant, kind, created_at, status, lease_until, metadata) "
        "SELECT stream_id, conversation_id, tenant, kind, created_at, status, lease_until, metadata "
        "FROM streams_v1 ORDER BY created_at, stream_id"
    )
    conn.execute("INSERT OR IGNORE INTO event_types (name) SELECT DISTINCT type FROM events_v1 ORDER BY type")
    conn.execute(
        "INSERT INTO events (position, sid, version, type, schema_version, event_id, key, recorded_at, payload, "
        "hash) SELECT e.position, s.sid, e.version, t.code, e.schema_version, chatledger_bytes(e.event_id, 16), "
        "e.key, chatledger_time(e.recorded_at), e.payload, chatledger_bytes(e.hash, 32) "
        "FROM events_v1 e JOIN streams s ON s.stream_id = e.stream_id JOIN event_types t ON t.name = e.type "
        "ORDER BY e.position"
    )
    conn.execute("DROP TABLE events_v1")
    conn.execute("DROP TABLE streams_v1")


def migrate_v2(conn: sqlite3.Connection) -> None:
    """Bring a layout 2 file to this one, in place, in the caller's transaction: a column is added.

    Its conversations keep no record of their streams (the column is NULL: ``verify`` counts them).
    """
    conn.execute("ALTER TABLE streams ADD COLUMN substreams TEXT")
    create_schema(conn)  # what layout 3 adds besides (the erased-conversation trigger)


def hex_sql(column: str) -> str:
    return f"CASE typeof({column}) WHEN 'blob' THEN lower(hex({column})) ELSE {column} END"


def iso_sql(column: str) -> str:
    # Python's datetime.isoformat(): no fraction when the microseconds are zero.
    return (
        f"CASE typeof({column}) WHEN 'integer' THEN "
        f"strftime('%Y-%m-%dT%H:%M:%S', {column} / 1000000, 'unixepoch') || "
        f"CASE WHEN {column} % 1000000 THEN printf('.%06d', {column} % 1000000) ELSE '' END || '+00:00' "
        f"ELSE {column} END"
    )


RECORD_SELECT = (
    "SELECT e.position, s.stream_id, e.version, s.conversation_id, s.tenant, e.event_id, t.name, "
    "e.schema_version, e.key, e.recorded_at, e.payload, e.hash "
    "FROM events e CROSS JOIN streams s ON s.sid = e.sid CROSS JOIN event_types t ON t.code = e.type"
)
"""Record columns in :class:`~chatledger.store.backends.recorder.Record` order, in stored form: pass each row
to :func:`record`. Append a WHERE clause."""


def record(row: tuple[Any, ...]) -> Record:
    """A :class:`~chatledger.store.backends.recorder.Record` from a row of :data:`RECORD_SELECT`.

    The id, hash and time are turned into text here rather than in SQL: Python's
    ``bytes.hex`` and a cached time are four times cheaper per row than SQLite's
    ``hex()`` and ``strftime()``, which matters when a projection rebuild reads the whole log.
    """
    event_id, at, digest = row[5], row[9], row[11]
    return Record(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        event_id.hex() if type(event_id) is bytes else event_id,
        row[6],
        row[7],
        row[8],
        iso_text(at) if type(at) is int else at,
        row[10],
        digest.hex() if type(digest) is bytes else digest,
    )


GENESIS_SQL = "'" + "0" * 64 + "'"

HEAD_SELECT = (
    "SELECT s.sid, s.stream_id, s.conversation_id, s.tenant, s.kind, COALESCE(l.version, 0), "
    f"COALESCE({hex_sql('l.hash')}, {GENESIS_SQL}), s.created_at, COALESCE({iso_sql('l.recorded_at')}, s.created_at), "
    "s.status, s.lease_until, s.metadata, s.substreams FROM streams s LEFT JOIN events l ON l.position = "
    "(SELECT position FROM events WHERE sid = s.sid ORDER BY version DESC LIMIT 1)"
)
"""The sid, then :class:`~chatledger.store.backends.recorder.StreamHead` fields in order; append a WHERE clause."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_EPOCH_ORDINAL = _EPOCH.toordinal()
_last_time: tuple[str, int | str] = ("", "")
_last_iso: tuple[int, str] = (-1, "")


def stored_bytes(text: str, size: int) -> bytes | str:
    """A hex id or hash as ``size`` bytes when it is exactly that in lowercase hex; otherwise the text."""
    if len(text) == 2 * size:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            return text
        if raw.hex() == text:
            return raw
    return text


def hex_text(value: bytes | str) -> str:
    """The text form of a stored id or hash (the inverse of :func:`stored_bytes`)."""
    return value.hex() if isinstance(value, bytes) else value


def iso_text(micros: int) -> str:
    """The ISO-8601 text of a stored time (the inverse of :func:`stored_time`); the last one is cached."""
    global _last_iso
    if _last_iso[0] == micros:
        return _last_iso[1]
    text = (_EPOCH + micros * _MICRO).isoformat()
    _last_iso = (micros, text)
    return text


def stored_time(text: str) -> int | str:
    """An ISO-8601 UTC time as microseconds since the epoch when the SQL above reproduces it exactly.

    That is the form ``datetime.isoformat()`` gives an aware UTC time from 1970 on:
    ``YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00``, the fraction present exactly when non-zero.
    """
    global _last_time
    last, value = _last_time
    if text == last:
        return value
    value = text
    size = len(text)
    if (
        ((size == 32 and text[19] == ".") or size == 25)
        and text.endswith("+00:00")
        and text[4] == "-"
        and text[7] == "-"
        and text[10] == "T"
        and text[13] == ":"
        and text[16] == ":"
    ):
        try:
            at = datetime.fromisoformat(text)
        except ValueError:
            at = None
        if at is not None and at.year >= 1970 and (at.microsecond == 0) == (size == 25):
            seconds = (at.toordinal() - _EPOCH_ORDINAL) * 86_400 + at.hour * 3_600 + at.minute * 60 + at.second
            value = seconds * 1_000_000 + at.microsecond
    _last_time = (text, value)
    return value
