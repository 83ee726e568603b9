"""A small log to tamper with, and the tampering itself as plain SQL (SQLite and PostgreSQL).

Every statement names rows by literal ids, so the same SQL runs on both databases;
``SIDE`` picks the side stream of ``c1`` without spelling its separator.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chatledger.store import Draft, ModelResponseRecorded, Store
from chatledger.store.recorder import side_stream_id

SIDE = side_stream_id("c1", "responses")
_SIDE_WHERE = "conversation_id = 'c1' AND stream_id <> 'c1'"
_COLUMNS = (
    "stream_id, version, conversation_id, tenant, event_id, type, schema_version, key, recorded_at, payload, hash"
)


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
class Tamper:
    """One way of editing the database behind chatledger's back, and what verify must say."""

    name: str
    statements: Sequence[str]
    stream_id: str
    kind: str
    version: int


def _copy(version: int, new_version: int, event_id: str) -> str:
    return (
        f"INSERT INTO events ({_COLUMNS}) SELECT stream_id, {new_version}, conversation_id, tenant, "
        f"'{event_id}', type, schema_version, 'forged-{event_id}', recorded_at, payload, hash "
        f"FROM events WHERE stream_id = 'c1' AND version = {version}"
    )


TAMPERS = [
    Tamper(
        "update a payload",
        ["UPDATE events SET payload = replace(payload, 'hello 2', 'HELLO 2') WHERE stream_id = 'c1' AND version = 3"],
        "c1",
        "changed",
        3,
    ),
    Tamper("delete a row", ["DELETE FROM events WHERE stream_id = 'c1' AND version = 3"], "c1", "removed", 3),
    Tamper("delete the last row", ["DELETE FROM events WHERE stream_id = 'c1' AND version = 5"], "c1", "removed", 5),
    Tamper(
        "swap two versions",
        [
            "UPDATE events SET version = -1 WHERE stream_id = 'c1' AND version = 2",
            "UPDATE events SET version = 2 WHERE stream_id = 'c1' AND version = 3",
            "UPDATE events SET version = 3 WHERE stream_id = 'c1' AND version = -1",
        ],
        "c1",
        "reordered",
        2,
    ),
    Tamper("insert a row past the head", [_copy(5, 6, "forged1")], "c1", "inserted", 6),
    Tamper(
        "insert a row mid-stream, renumbering the rest",
        [
            "UPDATE events SET version = version + 100 WHERE stream_id = 'c1' AND version >= 3",
            "UPDATE events SET version = version - 99 WHERE stream_id = 'c1' AND version > 100",
            _copy(2, 3, "forged2"),
            "UPDATE streams SET version = 6 WHERE stream_id = 'c1'",
        ],
        "c1",
        "inserted",
        3,
    ),
    Tamper(
        "change the head row's hash",
        [f"UPDATE streams SET head_hash = '{'f' * 64}' WHERE stream_id = 'c1'"],
        "c1",
        "changed",
        5,
    ),
    Tamper("delete the head row", ["DELETE FROM streams WHERE stream_id = 'c1'"], "c1", "removed", 5),
    Tamper(
        "move a row to another tenant",
        ["UPDATE events SET tenant = 'mallory' WHERE stream_id = 'c1' AND version = 4"],
        "c1",
        "removed",
        4,
    ),
    Tamper(
        "update a side stream's payload",
        [f"UPDATE events SET payload = replace(payload, 'first', 'FIRST') WHERE {_SIDE_WHERE} AND version = 1"],
        SIDE,
        "changed",
        1,
    ),
    Tamper(
        "delete a side stream row",
        [f"DELETE FROM events WHERE {_SIDE_WHERE} AND version = 1"],
        SIDE,
        "removed",
        1,
    ),
]


def tamper_sqlite(path: str, statements: Sequence[str]) -> None:
    """Run statements straight on the SQLite file, as an attacker with file access would."""
    conn = sqlite3.connect(path, isolation_level=None)
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
