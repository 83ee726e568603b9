"""Reading a SQLite log's tables whole, in pages of rows, for projection rebuilds.

A rebuild reads every event once and needs little of each: its position, stream,
version, type, key, time and payload, never its hash and rarely its event id.
:class:`SQLiteScan` reads exactly that from the ``events`` table, without
joining streams or types (a rebuild resolves their integer codes through small
caches: see :mod:`chatledger.projections.pages`), payloads as UTF-8 bytes (what
a JSON parser reads without a copy), and turns stored forms back into text only
when asked. The SQL lives here, beside the layout it is written for
(:mod:`chatledger.store.backends.sqlite.schema`), so that no other package knows the
file's tables and columns.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from chatledger.store.backends.recorder import Record
from chatledger.store.backends.sqlite.schema import RECORD_SELECT, hex_text, iso_text, record
from chatledger.store.errors import BackendUnavailable

if TYPE_CHECKING:
    from chatledger.store.backends.sqlite.recorder import SQLiteRecorder

__all__ = ["SQLiteScan"]

_ROWS = (
    "SELECT position, sid, version, type, schema_version, key, recorded_at, CAST(payload AS BLOB) "
    "FROM events WHERE position > ? ORDER BY position LIMIT ?"
)
_STREAMS = "SELECT sid, stream_id, conversation_id, tenant FROM streams"
_CHUNK = 500  # values per IN (...) list


class SQLiteScan:
    """Pages of a SQLite log's event rows and the names their codes stand for, on this thread's connection."""

    def __init__(self, recorder: SQLiteRecorder) -> None:
        self._recorder = recorder

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self._recorder.connected() as conn:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise BackendUnavailable(f"reading the log: SQLite said {exc}") from exc

    def rows(self, after: int, limit: int) -> list[tuple[Any, ...]]:
        """Up to ``limit`` events after position ``after``, in log order, as
        ``(position, sid, version, type code, schema version, key, stored time, payload bytes)``.

        Positions are given in commit order (writers hold the write lock), so the rows
        between two positions read now are the rows there forever.
        """
        return self._query(_ROWS, (after, limit))

    def streams_from(self, sid: int, limit: int) -> list[tuple[int, str, str, str]]:
        """``(sid, stream id, conversation id, tenant)`` of up to ``limit`` streams from ``sid`` on, in sid order.

        Sids are given in creation order, which is mostly the order a log meets its streams.
        """
        return self._query(f"{_STREAMS} WHERE sid >= ? ORDER BY sid LIMIT ?", (sid, limit))

    def streams(self, sids: Sequence[int]) -> list[tuple[int, str, str, str]]:
        """``(sid, stream id, conversation id, tenant)`` of the given streams (a stream's identity never changes)."""
        found: list[tuple[int, str, str, str]] = []
        for start in range(0, len(sids), _CHUNK):
            chunk = list(sids[start : start + _CHUNK])
            found += self._query(f"{_STREAMS} WHERE sid IN ({','.join('?' * len(chunk))})", chunk)
        return found

    def type_names(self) -> dict[int, str]:
        """Every event type code in the file and its name."""
        return dict(self._query("SELECT code, name FROM event_types", ()))

    def event_ids(self, after: int, last: int) -> list[str]:
        """The event ids of positions ``(after, last]``, in log order, as text."""
        rows = self._query(
            "SELECT event_id FROM events WHERE position > ? AND position <= ? ORDER BY position", (after, last)
        )
        return [hex_text(value) for (value,) in rows]

    def records(self, after: int, last: int, types: Sequence[int] | None = None) -> list[Record]:
        """The full records of positions ``(after, last]`` (of the given type codes only, when given)."""
        where = "e.position > ? AND e.position <= ?"
        params: list[Any] = [after, last]
        if types is not None:
            if not types:
                return []
            where += f" AND e.type IN ({','.join('?' * len(types))})"
            params += types
        return list(map(record, self._query(f"{RECORD_SELECT} WHERE {where} ORDER BY e.position", params)))

    @staticmethod
    def time_text(stored: int | str) -> str:
        """A stored time's ISO-8601 text (what :class:`Record` holds)."""
        return iso_text(stored) if type(stored) is int else str(stored)
