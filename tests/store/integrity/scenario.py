"""A small log to tamper with, and the tampering itself as plain SQL (SQLite and PostgreSQL).

The two layouts differ, so each tamper has its statements for each. PostgreSQL
stores a head row (version, last hash) per stream and the stream, conversation
and tenant on every event. SQLite stores events against the stream's integer
``sid``, types as codes of ``event_types``, ids and hashes as bytes, and no head
row: a stream's head is its last event. Its triggers refuse UPDATE and DELETE
of events and DELETE of streams, so an attacker with the file drops them first
(:func:`tamper_sqlite` does). ``SIDE`` picks the side stream of ``c1`` without
spelling its separator.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chatledger.store import Draft, ModelResponseRecorded, Store
from chatledger.store.backends.recorder import side_stream_id

SIDE = side_stream_id("c1", "responses")
TRIGGERS = ("events_no_update", "events_no_delete", "events_not_erased", "streams_no_delete", "streams_fixed")
"""The SQLite file's triggers: append-only, and no event into an erased conversation (:func:`unguarded` drops them)."""

_SIDE_WHERE = "conversation_id = 'c1' AND stream_id <> 'c1'"
_C1 = "sid = (SELECT sid FROM streams WHERE stream_id = 'c1')"
_SIDE_SID = f"sid = (SELECT sid FROM streams WHERE {_SIDE_WHERE})"
_PG_COLUMNS = (
    "stream_id, version, conversation_id, tenant, event_id, type, schema_version, key, recorded_at, payload, hash"
)
_SQLITE_COLUMNS = "sid, version, type, schema_version, event_id, key, recorded_at, payload, hash"


def build(store: Store) -> None:
    """c1: started + 4 messages (versions 1-5) and a side stream of 2 responses; c2: untouched."""
    store.start_conversation("c1", messages=[{"role": "user", "content": f"hello {i}"} for i in range(1, 5)])
    with store.transaction() as w:
        w.create_stream(SIDE, "c1", "side")
        w.append(
            SIDE,
            [
                Draft(ModelResponseRecorded, {"key": "r1", "response": {"content": "first answer"}}, key="r1"),
                Draft(ModelResponseRecorded, {"key": "r2", "response": {"content": "second answer"}}, key="r2"),
            ],
        )
    store.start_conversation("c2", messages=[{"role": "user", "content": "leave me alone"}])


@dataclass(frozen=True)
class Found:
    """What verify reports for a tamper: the stream, the kind of problem and the version."""

    stream_id: str
    kind: str
    version: int


@dataclass(frozen=True)
class Tamper:
    """One way of editing the database behind chatledger's back, and what verify must say.

    ``found`` is what PostgreSQL's verify reports, alone or with kept heads. On SQLite
    ``in_file`` is what verify reports from the file alone (None: the file shows nothing)
    and ``with_kept`` what it reports given the heads kept before the tamper.
    """

    name: str
    postgres: Sequence[str]
    sqlite: Sequence[str]
    found: Found
    in_file: Found | None
    with_kept: Found


def _same(name: str, postgres: Sequence[str], sqlite: Sequence[str], stream_id: str, kind: str, version: int) -> Tamper:
    """A tamper that both backends report alike, from the database alone."""
    found = Found(stream_id, kind, version)
    return Tamper(name, postgres, sqlite, found, found, found)


def _copy_pg(version: int, new_version: int, event_id: str) -> str:
    return (
        f"INSERT INTO events ({_PG_COLUMNS}) SELECT stream_id, {new_version}, conversation_id, tenant, "
        f"'{event_id}', type, schema_version, 'forged-{event_id}', recorded_at, payload, hash "
        f"FROM events WHERE stream_id = 'c1' AND version = {version}"
    )


def _copy_sqlite(version: int, new_version: int, event_id: str) -> str:
    return (
        f"INSERT INTO events ({_SQLITE_COLUMNS}) SELECT sid, {new_version}, type, schema_version, "
        f"'{event_id}', 'forged-{event_id}', recorded_at, payload, hash "
        f"FROM events WHERE {_C1} AND version = {version}"
    )


def _swap(where: str) -> list[str]:
    return [
        f"UPDATE events SET version = -1 WHERE {where} AND version = 2",
        f"UPDATE events SET version = 2 WHERE {where} AND version = 3",
        f"UPDATE events SET version = 3 WHERE {where} AND version = -1",
    ]


def _renumber(where: str) -> list[str]:
    return [
        f"UPDATE events SET version = version + 100 WHERE {where} AND version >= 3",
        f"UPDATE events SET version = version - 99 WHERE {where} AND version > 100",
    ]


TAMPERS = [
    _same(
        "update a payload",
        ["UPDATE events SET payload = replace(payload, 'hello 2', 'HELLO 2') WHERE stream_id = 'c1' AND version = 3"],
        [f"UPDATE events SET payload = replace(payload, 'hello 2', 'HELLO 2') WHERE {_C1} AND version = 3"],
        "c1",
        "changed",
        3,
    ),
    _same(
        "delete a row",
        ["DELETE FROM events WHERE stream_id = 'c1' AND version = 3"],
        [f"DELETE FROM events WHERE {_C1} AND version = 3"],
        "c1",
        "removed",
        3,
    ),
    # SQLite's head is the last event: without it the stream looks whole, one event shorter, but
    # later events of the log hold the positions after it: the file shows its position empty.
    Tamper(
        "delete the last row",
        ["DELETE FROM events WHERE stream_id = 'c1' AND version = 5"],
        [f"DELETE FROM events WHERE {_C1} AND version = 5"],
        Found("c1", "removed", 5),
        Found("", "removed", 0),
        Found("c1", "removed", 5),
    ),
    _same("swap two versions", _swap("stream_id = 'c1'"), _swap(_C1), "c1", "reordered", 2),
    # PostgreSQL's head row still says 5; on SQLite the copy is the head, an event that does not chain.
    Tamper(
        "insert a row past the head",
        [_copy_pg(5, 6, "forged1")],
        [_copy_sqlite(5, 6, "forged1")],
        Found("c1", "inserted", 6),
        Found("c1", "changed", 6),
        Found("c1", "changed", 6),
    ),
    _same(
        "insert a row mid-stream, renumbering the rest",
        [
            *_renumber("stream_id = 'c1'"),
            _copy_pg(2, 3, "forged2"),
            "UPDATE streams SET version = 6 WHERE stream_id = 'c1'",
        ],
        [*_renumber(_C1), _copy_sqlite(2, 3, "forged2")],
        "c1",
        "inserted",
        3,
    ),
    # PostgreSQL's head row holds the last hash; SQLite's head hash is the last event's own.
    _same(
        "change the head's hash",
        [f"UPDATE streams SET head_hash = '{'f' * 64}' WHERE stream_id = 'c1'"],
        [f"UPDATE events SET hash = X'{'ff' * 32}' WHERE {_C1} AND version = 5"],
        "c1",
        "changed",
        5,
    ),
    # Without its streams row a SQLite stream's events are not read at all: the conversation is gone,
    # and the file shows its stream number (1) missing, not whose it was.
    Tamper(
        "delete the stream row",
        ["DELETE FROM streams WHERE stream_id = 'c1'"],
        ["DELETE FROM streams WHERE stream_id = 'c1'"],
        Found("c1", "removed", 5),
        Found("#1", "removed", 1),
        Found("c1", "removed", 1),
    ),
    # SQLite keeps the tenant on the stream, not on each event: only the whole stream can move.
    Tamper(
        "move to another tenant",
        ["UPDATE events SET tenant = 'mallory' WHERE stream_id = 'c1' AND version = 4"],
        ["UPDATE streams SET tenant = 'mallory' WHERE stream_id = 'c1'"],
        Found("c1", "removed", 4),
        None,
        Found("c1", "removed", 1),
    ),
    _same(
        "update a side stream's payload",
        [f"UPDATE events SET payload = replace(payload, 'first', 'FIRST') WHERE {_SIDE_WHERE} AND version = 1"],
        [f"UPDATE events SET payload = replace(payload, 'first', 'FIRST') WHERE {_SIDE_SID} AND version = 1"],
        SIDE,
        "changed",
        1,
    ),
    _same(
        "delete a side stream row",
        [f"DELETE FROM events WHERE {_SIDE_WHERE} AND version = 1"],
        [f"DELETE FROM events WHERE {_SIDE_SID} AND version = 1"],
        SIDE,
        "removed",
        1,
    ),
]


def unguarded(path: str) -> sqlite3.Connection:
    """An autocommit connection to the SQLite file with its append-only triggers dropped.

    This is what an attacker with write access to the file does first; the
    triggers refuse every UPDATE and DELETE of events, DELETE of streams and
    changes to a stream's identity or owner.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    found = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")]
    assert sorted(found) == sorted(TRIGGERS), found
    for name in found:
        conn.execute(f"DROP TRIGGER {name}")
    return conn


def tamper_sqlite(path: str, statements: Sequence[str]) -> None:
    """Run statements straight on the SQLite file, its triggers dropped, as an attacker with file access would."""
    conn = unguarded(path)
    try:
        for sql in statements:
            conn.execute(sql)
    finally:
        conn.close()


def tamper_postgres(url: str, statements: Sequence[str]) -> None:
    """Run statements straight on the PostgreSQL tables."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)  # type: ignore[call-overload]


def sqlite_rows(path: str, table: str = "events") -> list[tuple[Any, ...]]:
    """Every row of a table of the SQLite file, in a stable order."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
    finally:
        conn.close()
