"""Reads of the PostgreSQL log: streams, heads, and the global order.

**Global order.** Positions come from one sequence, drawn by a writer after it holds the
lock on the head of the stream it appends to (so a stream's versions get increasing
positions) and after its transaction has an id. They are final when drawn, and the log
is ordered by them. What a reader must not do is pass a *gap*: a position drawn by a
transaction still in flight, whose event may commit after the reader has moved on.

A reader therefore returns a position only when every lower position it passes is
resolved: visible, or certain never to appear. A transaction that drew a position lower
than the highest one visible in a page's snapshot had its transaction id before that
snapshot (a writer has its id before it draws), so after the page is read it is either
still running, and listed with its id in ``pg_stat_activity``, or ended. So:

- rows numbered right after the reader's ``after`` with no gap are returned as they are;
- otherwise the reader waits (up to ``read_wait``) until the transactions of this database
  running after the page was read have ended; then every position up to the page's highest
  is resolved, and the page is read again in a later snapshot and returned;
- positions up to the highest one this recorder proved resolved are remembered.

No transaction id is stored: the rule holds on whatever server the rows are on, so the
log survives ``pg_dump``/``pg_restore``, ``pg_upgrade`` and failover unchanged. See
docs/postgres.md for the reasoning and the alternatives measured.

**Not on a standby.** A hot standby's ``pg_stat_activity`` does not list the primary's
transactions, and the standby cannot know them (a writer draws its position before its first
WAL record), so there a gap held by a transaction in flight on the primary looks resolved.
The wait therefore asks ``pg_is_in_recovery()`` in the same statement that lists the running
transactions: on a standby, a read that would have to pass a gap raises BackendUnavailable
(read the global log on the primary), and ``last_position`` returns the end of the gap-free
run. Reads that pass no gap, and stream reads, work on a standby as anywhere. Nothing is
cached, so after a promotion the same recorder resolves gaps as on any primary.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, LiteralString

from chatledger.store.backends.postgres.connection import Connections
from chatledger.store.backends.postgres.schema import HEAD_COLUMNS, RECORD_COLUMNS
from chatledger.store.backends.recorder import Record, StreamHead
from chatledger.store.errors import BackendUnavailable

__all__ = ["LogReader"]

_PAGE: LiteralString = (
    f"WITH page AS (SELECT {RECORD_COLUMNS} FROM events WHERE position > %(after)s AND position <= %(upto)s "
    "ORDER BY position LIMIT %(limit)s) SELECT (SELECT max(position) FROM events), NULL::bigint, page.* "
    "FROM (SELECT) AS meta LEFT JOIN page ON true ORDER BY page.position"
)
# A tenant's page skips other tenants' positions, so it cannot show gaps: the end of the gap-free
# run of the whole log after ``after`` (up to the page's end) is looked up in the same snapshot.
_TENANT_PAGE: LiteralString = (
    f"WITH page AS (SELECT {RECORD_COLUMNS} FROM events WHERE tenant = %(tenant)s AND position > %(after)s "
    "AND position <= %(upto)s ORDER BY position LIMIT %(limit)s), "
    "upto AS (SELECT max(position) AS at FROM page), "
    "run AS (SELECT CASE WHEN NOT EXISTS (SELECT FROM events WHERE position = %(after)s + 1) THEN %(after)s "
    "ELSE COALESCE((SELECT min(e.position) FROM events e WHERE e.position > %(after)s "
    "AND e.position < (SELECT at FROM upto) "
    "AND NOT EXISTS (SELECT FROM events f WHERE f.position = e.position + 1)), (SELECT at FROM upto)) END AS at) "
    "SELECT (SELECT max(position) FROM events), run.at, page.* FROM run LEFT JOIN page ON true "
    "ORDER BY page.position"
)
# Whether the server is a standby, and the transactions of this database that have a transaction
# id, as the server reports them now (only they can hold a position: sequences belong to one
# database, and a writer has its id before it draws). Read from pg_stat_activity, which lists every
# running id, also those above a snapshot's xmax that the snapshot's in-progress list leaves out;
# a standby's lists none of the primary's, hence the recovery flag, asked in the same round trip.
_RUNNING: LiteralString = (
    "SELECT pg_is_in_recovery(), COALESCE(array_agg(backend_xid::text), '{}') FROM pg_stat_activity "
    "WHERE datname = current_database() AND backend_xid IS NOT NULL"
)
_STILL_RUNNING: LiteralString = (
    "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = current_database() AND backend_xid::text = ANY(%s))"
)
_NO_END = 1 << 62


class LogReader:
    """The read side of the PostgreSQL log (see the module docstring for the global order).

    Args:
        connections: the backend's pool.
        read_wait: seconds a global-log read waits for transactions in flight to end so that
            it includes every event committed before it began.
    """

    def __init__(self, connections: Connections, read_wait: float) -> None:
        self._db = connections
        self.read_wait = read_wait
        self._resolved = 0  # every position up to this one is visible or will never be

    def _page(self, after: int, upto: int, limit: int | None, tenant: str | None) -> tuple[int, int, list[Record]]:
        """One snapshot's page: (highest visible position, end of the gap-free run after ``after``
        (tenant pages only, else 0), records)."""
        rows = self._db.query(
            _PAGE if tenant is None else _TENANT_PAGE,
            {"after": after, "upto": upto, "limit": limit, "tenant": tenant},
            "reading the global log",
        )
        top, run = rows[0][0] or 0, rows[0][1] or 0
        records = [Record._make(row[2:]) for row in rows if row[2] is not None]
        return int(top), int(run), records

    def _settled(self, records: Sequence[Record], after: int, run: int) -> int:
        """How many leading records are final without waiting (no unresolved gap before them)."""
        covered = after
        for i, record in enumerate(records):
            if record.position <= max(self._resolved, run) or record.position == covered + 1:
                covered = record.position
                continue
            return i
        return len(records)

    def _drained(self) -> bool | None:
        """Wait (up to ``read_wait``) until every transaction of this database running now has ended.

        Called after a page was read: a transaction that held a position lower than the page's
        highest had its id before the page's snapshot, so it is running now or has ended.

        Returns:
            True once they have ended, False when ``read_wait`` ran out first, None when the
            server is a standby (in recovery): the primary's transactions, which may hold the
            gap, are not listed there, so nothing can be resolved on it.
        """
        in_recovery, running = self._db.query(_RUNNING, (), "reading the log horizon")[0]
        if in_recovery:
            return None
        if not running:
            return True
        deadline = time.monotonic() + self.read_wait
        delay = 0.001
        while True:
            if not self._db.query(_STILL_RUNNING, (list(running),), "reading the log horizon")[0][0]:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _resolve(self, top: int) -> None:
        self._resolved = max(self._resolved, top)

    def read_all(self, after: int = 0, limit: int | None = None, tenant: str | None = None) -> list[Record]:
        """The log after position ``after``, in position order, never passing an unresolved gap.

        An event committed before the call is included once the transactions in flight at
        that moment have ended (read-your-writes); after ``read_wait`` seconds the read
        returns the part that is final (possibly nothing) and the next read continues.

        Raises:
            BackendUnavailable: the server is a standby and the page has a gap right after
                ``after`` or inside it (a standby cannot tell whether a transaction on the
                primary still holds it); read on the primary. Also when the server is unreachable.
        """
        top, run, records = self._page(after, _NO_END, limit, tenant)
        settled = self._settled(records, after, run)
        if settled == len(records):
            return records
        drained = self._drained()
        if drained is None:
            raise BackendUnavailable(
                f"reading the global log after position {after}: this server is a standby (in recovery), "
                f"and the event at position {records[settled].position} comes after a position not visible "
                "here, which a transaction in flight on the primary may still fill; a standby cannot tell, "
                "so it does not pass the gap. Read the global log on the primary (a URL naming several "
                "servers takes target_session_attrs=read-write)"
            )
        if not drained:
            return records[:settled]
        # Every position up to ``top`` is now resolved, and visible in a snapshot taken from here on.
        self._resolve(top)
        return self._page(after, top, limit, tenant)[2]

    def last_position(self) -> int:
        """The highest position readers can see with every lower one resolved (0 when empty).

        On a standby, where no gap can be resolved, the end of the gap-free run.
        """
        top, _, _ = self._page(_NO_END, _NO_END, 0, None)
        if top <= self._resolved or self._drained():
            self._resolve(top)
            return top
        # Something in flight may still hold a gap (or, on a standby, nothing tells): the end of
        # the gap-free run after what is resolved, every position of which is visible, so resolved.
        end = self._resolved
        for row in self._db.query(
            "SELECT position FROM events WHERE position > %s ORDER BY position LIMIT 10000",
            (end,),
            "reading the last position",
        ):
            if row[0] != end + 1:
                break
            end = row[0]
        self._resolve(end)
        return end

    def read_stream(self, stream_id: str, after: int = 0, limit: int | None = None) -> list[Record]:
        """A stream's records with version > ``after``, in version order."""
        rows = self._db.query(
            f"SELECT {RECORD_COLUMNS} FROM events WHERE stream_id = %s AND version > %s ORDER BY version LIMIT %s",
            (stream_id, after, limit),
            "reading a stream",
        )
        return list(map(Record._make, rows))

    def read_payloads(self, stream_id: str, type_name: str, upto: int | None = None) -> list[str]:
        """The payloads of one event type in a stream, in version order."""
        rows = self._db.query(
            "SELECT payload FROM events WHERE stream_id = %s AND version <= %s AND type = %s ORDER BY version",
            (stream_id, _NO_END if upto is None else upto, type_name),
            "reading payloads",
        )
        return [row[0] for row in rows]

    def read_versioned_payloads(
        self,
        stream_id: str,
        type_name: str,
        after: int = 0,
        upto: int | None = None,
        newest: int | None = None,
        conversation_of: str | None = None,
    ) -> list[tuple[int, str]]:
        """(version, payload) of one event type in a stream, oldest first; the last ``newest`` only.

        With ``conversation_of`` (a tenant), only if the stream is a conversation of that tenant.
        """
        sql: LiteralString = (
            "SELECT version, payload FROM events WHERE stream_id = %s AND version > %s AND version <= %s AND type = %s"
        )
        params: list[Any] = [stream_id, after, _NO_END if upto is None else upto, type_name]
        if conversation_of is not None:
            sql += " AND EXISTS (SELECT 1 FROM streams WHERE stream_id = %s AND tenant = %s AND kind = 'conversation')"
            params += [stream_id, conversation_of]
        sql += " ORDER BY version DESC LIMIT %s"
        rows = self._db.query(sql, (*params, newest), "reading payloads")
        return [(row[0], row[1]) for row in reversed(rows)]

    def get_head(self, stream_id: str) -> StreamHead | None:
        """A stream's head without locking it."""
        rows = self._db.query(
            f"SELECT {HEAD_COLUMNS} FROM streams WHERE stream_id = %s", (stream_id,), "reading a stream head"
        )
        return StreamHead(*rows[0]) if rows else None

    def list_heads(
        self,
        kind: str | None,
        tenant: str | None,
        limit: int | None = None,
        status: Sequence[str] | None = None,
        conversation_id: str | None = None,
    ) -> list[StreamHead]:
        """Stream heads of one kind, oldest first, optionally filtered."""
        params: dict[str, Any] = {
            "kind": kind,
            "tenant": tenant,
            "status": list(status) if status else None,
            "conv": conversation_id,
            "limit": limit,
        }
        rows = self._db.query(
            f"SELECT {HEAD_COLUMNS} FROM streams WHERE {'TRUE' if kind is None else 'kind = %(kind)s'} "
            "AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s) "
            "AND (%(status)s::text[] IS NULL OR status = ANY(%(status)s)) "
            "AND (%(conv)s::text IS NULL OR conversation_id = %(conv)s) "
            "ORDER BY created_at, stream_id LIMIT %(limit)s",
            params,
            "listing streams",
        )
        return [StreamHead(*row) for row in rows]
