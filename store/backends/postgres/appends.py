"""Writes to the PostgreSQL log: write transactions, and lone appends as one statement.

A write transaction (:class:`WriteTx`) locks the heads of the streams it touches with
``SELECT ... FOR UPDATE`` and never the table: appends to different conversations never
queue behind one another. It costs three round trips for one event: ``BEGIN`` and the head
lock, the idempotency-key lookup, and one pipeline carrying the insert, the head update and
``COMMIT``.

A lone ``Store.append`` of one event (:class:`GuessedStatement`, see
:mod:`chatledger.store.backends.guess`) is one autocommit statement built against the head
this recorder last saw of the conversation (:data:`APPEND_ONE`): it writes only if that head
is still current and its key is not stored; otherwise nothing is written and the append is
done again in a write transaction (as is a lone append of several events).

**Positions** come from the ``events`` position sequence, drawn only once the writer has a
transaction id (readers can tell an in-flight position from the snapshot, see
:mod:`chatledger.store.backends.postgres.reads`), and in a write transaction only once it
holds the lock on the head of the stream it appends to. The one statement draws as it moves
the head, so possibly before it waits for the head's lock; but it writes only if the head is
still the one it guessed, which no append committed after the draw can leave: a stream's
versions get increasing positions either way.

**Hashes** cover positions (chain rule 3, :mod:`chatledger.store.integrity.chain`). A write
transaction draws the positions before the events are hashed; the one statement is handed an
event's inner hash and finishes it with the position it draws, in SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, LiteralString

import psycopg

from chatledger.store.backends.guess import GuessedAppend, Miss
from chatledger.store.backends.postgres.connection import (
    Connections,
    ServerProcess,
    is_dead,
    raise_translated,
    server_process,
)
from chatledger.store.backends.postgres.schema import HEAD_COLUMNS, RECORD_COLUMNS
from chatledger.store.backends.recorder import NewRecord, Record, StreamHead
from chatledger.store.errors import ConflictError

__all__ = ["APPEND_ONE", "GuessedStatement", "HeadCache", "WriteTx", "append_guessed"]

_CACHED_HEADS = 4096
UPDATE_HEAD: LiteralString = (
    "UPDATE streams SET version = %s, head_hash = %s, updated_at = %s, status = %s, lease_until = %s, "
    "substreams = %s WHERE stream_id = %s"
)
# The head is locked in a materialized CTE first: the position is drawn after the lock (and the
# transaction id the lock gives), never before it.
_LOCK_HEAD: LiteralString = (
    f"WITH h AS MATERIALIZED (SELECT {HEAD_COLUMNS} FROM streams WHERE stream_id = %s FOR UPDATE) "
    "SELECT h.*, nextval(%s) FROM h"
)
_INSERT_SQL: dict[int, LiteralString] = {}

APPEND_ONE: LiteralString = (
    # The head moves only from the guessed version and hash; the position is drawn after the
    # transaction id (a CASE evaluates its condition first) and finishes the hash, which the head
    # keeps and the event stores: chain.with_position in SQL. A stale guess updates no row and
    # inserts nothing, as does an erasure since the guess (it marks the head); a stored key fails the
    # statement on the unique index.
    "WITH head AS (UPDATE streams SET version = %(version)s, updated_at = %(at)s, head_hash = "
    "CASE WHEN pg_current_xact_id() IS NOT NULL THEN encode(sha256(convert_to("
    "%(inner)s || chr(30) || 'p:' || nextval(%(sequence)s)::text, 'UTF8')), 'hex') END "
    "WHERE stream_id = %(stream)s AND version = %(guess_version)s AND head_hash = %(guess_hash)s "
    "AND status IS DISTINCT FROM 'erased' "
    "RETURNING conversation_id, tenant, head_hash, currval(%(sequence)s) AS position) "
    "INSERT INTO events (position, stream_id, version, conversation_id, tenant, event_id, type, "
    "schema_version, key, recorded_at, payload, hash) "
    "SELECT head.position, %(stream)s, %(version)s, head.conversation_id, head.tenant, %(event_id)s, %(type)s, "
    "%(schema_version)s, %(key)s, %(at)s, %(payload)s, head.head_hash FROM head "
    "RETURNING position"
)


class WriteTx:
    """A write transaction on one pooled connection; heads read through it stay locked.

    Statements whose results nobody waits for (the event inserts, the head updates) are
    queued and sent with the next statement or with ``COMMIT`` in one pipeline. Positions
    are therefore drawn from the sequence beforehand: one with each head lock, more when a
    batch needs them.
    """

    def __init__(self, db: Connections, conn: psycopg.Connection[Any], sequence: str) -> None:
        self._db = db
        self._sequence = sequence
        self.conn = conn
        self.begun = False
        self.process: ServerProcess | None = None
        self.event_ids: list[str] = []
        self._queued: list[tuple[LiteralString, Sequence[Any]]] = []
        self._spare: list[int] = []
        self.heads: dict[str, StreamHead] = {}  # as they will stand after COMMIT

    def _run(self, sql: LiteralString, params: Sequence[Any], what: str) -> list[Any]:
        """Send the queued statements and this one (starting the transaction first); its rows."""
        if self.begun:
            try:
                if not self._queued:
                    return self.conn.execute(sql, params).fetchall()
                with self.conn.pipeline():
                    self._send_queued()
                    cur = self.conn.execute(sql, params)
                return cur.fetchall()
            except psycopg.Error as exc:
                raise_translated(exc, what)
        for attempt in range(self._db.pool_max + 2):
            try:
                with self.conn.pipeline():
                    self.conn.execute("BEGIN")
                    cur = self.conn.execute(sql, params)
                self.begun = True
                return cur.fetchall()
            except psycopg.Error as exc:
                # Nothing has been done yet: a dead connection is swapped for a live one and retried.
                if not is_dead(exc, self.conn) or attempt > self._db.pool_max:
                    raise_translated(exc, what)
                self.conn = self._db.replace(self.conn)
        raise AssertionError("unreachable")

    def _send_queued(self) -> None:
        queued, self._queued = self._queued, []
        i = 0
        while i < len(queued):
            sql, params = queued[i]
            if sql.startswith("INSERT") and i + 1 < len(queued) and queued[i + 1][0] is UPDATE_HEAD:
                # An append's insert and head update travel as one statement: half the server work.
                self.conn.execute(f"WITH appended AS ({sql}) {UPDATE_HEAD}", [*params, *queued[i + 1][1]])
                i += 2
                continue
            self.conn.execute(sql, params)
            i += 1

    def head(self, stream_id: str) -> StreamHead | None:
        rows = self._run(_LOCK_HEAD, (stream_id, self._sequence), "locking a stream head")
        if not rows:
            return None
        *head, position = rows[0]
        self._spare.append(position)
        self.heads[stream_id] = found = StreamHead(*head)
        return found

    def create_stream(self, head: StreamHead) -> None:
        rows = self._run(
            f"INSERT INTO streams ({HEAD_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
            "ON CONFLICT (stream_id) DO NOTHING RETURNING 1",
            head.as_row(),
            "creating a stream",
        )
        if not rows:
            raise ConflictError(f"stream {head.stream_id!r} exists already")
        self.heads[head.stream_id] = head

    def records_by_keys(self, stream_id: str, keys: Sequence[str]) -> dict[str, Record]:
        if not keys:
            return {}
        rows = self._run(
            # A join on unnest keeps each key an index lookup, also under a generic plan.
            f"SELECT {RECORD_COLUMNS} FROM unnest(%s::text[]) AS k(wanted) JOIN events "
            "ON stream_id = %s AND key IS NOT NULL AND key = wanted",
            (list(keys), stream_id),
            "looking up idempotency keys",
        )
        return {str(rec.key): rec for rec in (Record(*row) for row in rows)}

    def records_at(self, stream_id: str, versions: Sequence[int]) -> list[Record]:
        if not versions:
            return []
        rows = self._run(
            f"SELECT {RECORD_COLUMNS} FROM events WHERE stream_id = %s AND version = ANY(%s)",
            (stream_id, list(versions)),
            "looking up events",
        )
        return [Record(*row) for row in rows]

    def positions(self, count: int) -> list[int]:
        if len(self._spare) < count:
            # The transaction id first (a tuple's expressions are evaluated in order), then positions.
            rows = self._run(
                "SELECT pg_current_xact_id(), nextval(%s) FROM generate_series(1, %s)",
                (self._sequence, count - len(self._spare)),
                "drawing positions",
            )
            self._spare += [row[1] for row in rows]
        self._spare.sort()
        return self._spare[:count]

    def insert(self, records: Sequence[NewRecord]) -> list[int]:
        positions = self.positions(len(records))
        self._spare = self._spare[len(records) :]
        for start in range(0, len(records), 1000):
            chunk = records[start : start + 1000]
            params: list[Any] = []
            for r, position in zip(chunk, positions[start : start + 1000], strict=True):
                params += [position, r.stream_id, r.version, r.conversation_id, r.tenant, r.event_id]
                params += [r.type, r.schema_version, r.key, r.recorded_at, r.payload, r.hash]
            self._queued.append((_insert_sql(len(chunk)), params))
        self.event_ids += [r.event_id for r in records]
        return positions

    def update_head(self, head: StreamHead) -> None:
        self._queued.append(
            (
                UPDATE_HEAD,
                (
                    head.version,
                    head.head_hash,
                    head.updated_at,
                    head.status,
                    head.lease_until,
                    head.substreams,
                    head.stream_id,
                ),
            )
        )
        if head.stream_id in self.heads:
            self.heads[head.stream_id] = head

    def commit(self) -> None:
        if not self.begun:
            return
        self.process = server_process(self.conn)
        with self.conn.pipeline():
            self._send_queued()
            self.conn.execute("COMMIT")

    def rollback(self) -> None:
        self._queued = []
        if self.conn.closed or self.conn.broken:
            return
        try:
            self.conn.execute("ROLLBACK")
        except psycopg.Error:
            self.conn.close()  # the pool discards it


def _insert_sql(rows: int) -> LiteralString:
    """The INSERT of ``rows`` events with their positions given (cached per row count)."""
    sql = _INSERT_SQL.get(rows)
    if sql is None:
        values = ",".join(["(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"] * rows)
        sql = _INSERT_SQL[rows] = (
            "INSERT INTO events (position, stream_id, version, conversation_id, tenant, event_id, type, "
            f"schema_version, key, recorded_at, payload, hash) VALUES {values}"
        )
    return sql


def append_guessed(db: Connections, sequence: str, head: StreamHead, record: NewRecord) -> list[int] | None:
    """Send the one-statement append of ``record`` (its hash the inner one): its position, or None when
    the head had moved.

    A connection lost while the statement was in flight is settled by its event id
    (:meth:`Connections.settle`); when nothing was written it is sent again.
    """
    params = {
        "version": record.version,
        "at": record.recorded_at,
        "inner": record.hash,
        "sequence": sequence,
        "stream": head.stream_id,
        "guess_version": head.version,
        "guess_hash": head.head_hash,
        "event_id": record.event_id,
        "type": record.type,
        "schema_version": record.schema_version,
        "key": record.key,
        "payload": record.payload,
    }
    for attempt in range(db.pool_max + 2):
        conn = db.get()
        process, held = server_process(conn), True
        try:
            rows = conn.execute(APPEND_ONE, params).fetchall()
            return [rows[0][0]] if rows else None  # no row: the head had moved
        except psycopg.Error as exc:
            if not is_dead(exc, conn):
                raise_translated(exc, "appending")
            held = False
            db.discard(conn)  # free the slot: settling needs a connection
            landed = db.settle(process, [record.event_id], exc, "appending")
            if landed is not None:
                return landed
            if attempt > db.pool_max:
                raise_translated(exc, "appending (nothing was written)")
        finally:
            if held:
                db.put(conn)
    raise AssertionError("unreachable")


class HeadCache:
    """The last head this recorder saw of each stream (bounded: cleared when full)."""

    def __init__(self) -> None:
        self._heads: dict[str, StreamHead] = {}

    def get(self, stream_id: str) -> StreamHead | None:
        return self._heads.get(stream_id)

    def remember(self, heads: dict[str, StreamHead]) -> None:
        if len(self._heads) + len(heads) > _CACHED_HEADS:
            self._heads.clear()
        self._heads.update(heads)


class GuessedStatement(GuessedAppend):
    """A lone append of one event sent as the one statement :data:`APPEND_ONE`, built against the head
    this recorder last saw (see :mod:`chatledger.store.backends.guess`): it writes only if that head is
    current and the key is not stored, finishes the event's hash with the position it draws, and
    commits (it runs in autocommit)."""

    finishes_hash = True

    def __init__(self, db: Connections, heads: HeadCache, sequence: str) -> None:
        self._db = db
        self._heads = heads
        self._sequence = sequence

    def remembered(self, stream_id: str) -> StreamHead | None:
        return self._heads.get(stream_id)

    def send(self, head: StreamHead, records: Sequence[NewRecord]) -> list[int]:
        if len(records) != 1:
            raise Miss
        positions = append_guessed(self._db, self._sequence, head, records[0])
        if positions is None:
            raise Miss
        return positions

    def remember(self, head: StreamHead) -> None:
        self._heads.remember({head.stream_id: head})
