"""PostgreSQL backend: many workers on many machines, global order without a global lock.

**Writes** lock only the heads of the streams they touch (``SELECT ... FOR
UPDATE``), so appends to different conversations never queue behind one
another. A write transaction costs three round trips (see :class:`_Tx`). A lone
``Store.append`` costs one: a single autocommit statement built against the
head this recorder last saw, which writes only if that head is still current
(:meth:`PostgresRecorder.append_alone`); otherwise it falls back to a
transaction.

**Global order.** eventsourcing serialises every insert with ``LOCK TABLE`` so
that a ``position > last`` reader never skips a row that commits late. We do
not: every row stores the id of the transaction that inserted it
(``tx_id xid8 DEFAULT pg_current_xact_id()``) beside its ``bigserial``
position, and the global log is ordered by ``(tx_id, position)`` and read only
below the snapshot's ``xmin`` (``tx_id < pg_snapshot_xmin(pg_current_snapshot())``):
every transaction that could still add a row below that horizon has ended, so
the part of the log a reader sees never grows in the middle. A reader that
continues after a position looks that row's ``tx_id`` up and resumes after
``(tx_id, position)``. Trade-offs (see ``docs/postgres.md``): a long-running
transaction anywhere on the server delays readers (it never makes them skip),
and positions are unique but not necessarily increasing in log order.

**Faults.** Every psycopg error is translated at this boundary. A connection
found dead at the first statement of a transaction or a read is replaced and
the statement retried; a write whose outcome is unknown (the connection died
during ``COMMIT``) is settled, once the server process that ran it has ended, by
looking up the event ids it wrote (never by transaction id: ids are reissued after
a crash-restart), so a write is never reported failed when it landed, nor
retried into a duplicate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, LiteralString, NoReturn, TypeVar

import psycopg
from psycopg import errors as pgerrors
from psycopg_pool import ConnectionPool, PoolTimeout

from chatledger.store.backends.guess import GuessedAppend, Miss, append_alone
from chatledger.store.backends.postgres.schema import MIGRATIONS, SCHEMA_VERSION
from chatledger.store.backends.recorder import NewRecord, PagedLog, Record, StreamHead, WriteTransaction
from chatledger.store.errors import BackendUnavailable, ChatledgerError, ConflictError, ValidationError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "PostgresRecorder", "split_url", "translate"]


_RECORD_COLUMNS = (
    "position, stream_id, version, conversation_id, tenant, event_id, type, schema_version, key, "
    "recorded_at, payload, hash"
)
_HEAD_COLUMNS = (
    "stream_id, conversation_id, tenant, kind, version, head_hash, created_at, updated_at, status, "
    "lease_until, metadata"
)
_HORIZON = "pg_snapshot_xmin(pg_current_snapshot())"
# The log-order cursor of position %(after)s: that row's (tx_id, position); the start for 0.
_CURSOR = (
    "(COALESCE((SELECT tx_id FROM events WHERE position <= %(after)s ORDER BY position DESC LIMIT 1), "
    "'0'::xid8), %(after)s)"
)
_OUR_OPTIONS = {"pool_min", "pool_max", "timeout", "read_wait"}
_APPEND_SQL: dict[int, LiteralString] = {}
_CACHED_HEADS = 4096
T = TypeVar("T")


def translate(exc: BaseException, what: str) -> ChatledgerError:
    """The chatledger error for a psycopg (or pool) error raised while doing ``what``."""
    if isinstance(exc, ChatledgerError):
        return exc
    if isinstance(exc, psycopg.IntegrityError):
        return ConflictError(f"{what}: {_first_line(exc)}")
    if isinstance(exc, psycopg.DataError):
        return ValidationError("payload", f"PostgreSQL cannot store it: {_first_line(exc)}")
    if isinstance(exc, pgerrors.DeadlockDetected | pgerrors.SerializationFailure):
        # Two writers racing (typically to create the same stream) locked in opposite orders:
        # the loser is rolled back, exactly like losing a unique-key race.
        return ConflictError(f"{what}: a concurrent writer won ({_first_line(exc)}); nothing was written")
    if isinstance(exc, pgerrors.LockNotAvailable):
        return BackendUnavailable(f"{what}: {_first_line(exc)}; nothing was written, retry")
    if isinstance(exc, PoolTimeout):
        return BackendUnavailable(f"{what}: no PostgreSQL connection became available ({exc})")
    return BackendUnavailable(f"{what}: PostgreSQL said {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _raise(exc: BaseException, what: str) -> NoReturn:
    raise translate(exc, what) from exc


def _dead(exc: BaseException, conn: psycopg.Connection[Any] | None) -> bool:
    """Whether ``exc`` means the connection is gone (so a fresh one may be tried)."""
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and conn is not None:
        return bool(conn.broken or conn.closed)
    return isinstance(exc, pgerrors.AdminShutdown | pgerrors.CrashShutdown)


_Backend = tuple[int, Any]
"""A server process: its pid and start time (a pid alone may be reused, after a restart too)."""


def _identify(conn: psycopg.Connection[Any]) -> None:
    """Pool hook: note which server process a new connection talks to."""
    row = conn.execute("SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()").fetchone()
    conn.chatledger_backend = tuple(row) if row else None  # type: ignore[attr-defined]


def _backend(conn: psycopg.Connection[Any]) -> _Backend | None:
    """The server process behind a pooled connection (None when it could not be told)."""
    found: _Backend | None = getattr(conn, "chatledger_backend", None)
    return found


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """Split chatledger's own query options (``pool_min``, ``pool_max``, ``timeout``, ``read_wait``)
    from a PostgreSQL URL, leaving the rest (``options=``, ``sslmode=``...) for libpq."""
    base, _, query = url.partition("?")
    keep, ours = [], {}
    for part in query.split("&") if query else []:
        name, _, value = part.partition("=")
        if name in _OUR_OPTIONS:
            ours[name] = value
        else:
            keep.append(part)
    base = "postgresql://" + base.split("://", 1)[1] if "://" in base else base
    return (f"{base}?{'&'.join(keep)}" if keep else base), ours


class _Tx:
    """A write transaction on one pooled connection; heads read through it stay locked.

    Statements whose results nobody waits for (the event inserts, the head updates) are
    queued and sent with the next statement or with ``COMMIT`` in one pipeline. Positions
    are therefore drawn from the sequence beforehand: one with each head lock, more when a
    batch needs them. A single-event append costs three round trips.
    """

    def __init__(self, rec: PostgresRecorder, conn: psycopg.Connection[Any]) -> None:
        self._rec = rec
        self.conn = conn
        self.begun = False
        self.xid: str | None = None
        self.backend: _Backend | None = None
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
                _raise(exc, what)
        for attempt in range(self._rec.pool_max + 2):
            try:
                with self.conn.pipeline():
                    self.conn.execute("BEGIN")
                    cur = self.conn.execute(sql, params)
                self.begun = True
                return cur.fetchall()
            except psycopg.Error as exc:
                # Nothing has been done yet: a dead connection is swapped for a live one and retried.
                if not _dead(exc, self.conn) or attempt > self._rec.pool_max:
                    _raise(exc, what)
                self.conn = self._rec._replace_connection(self.conn)
        raise AssertionError("unreachable")

    def _send_queued(self) -> None:
        queued, self._queued = self._queued, []
        i = 0
        while i < len(queued):
            sql, params = queued[i]
            if sql.startswith("INSERT") and i + 1 < len(queued) and queued[i + 1][0] is _UPDATE_HEAD:
                # An append's insert and head update travel as one statement: half the server work.
                self.conn.execute(f"WITH appended AS ({sql}) {_UPDATE_HEAD}", [*params, *queued[i + 1][1]])
                i += 2
                continue
            self.conn.execute(sql, params)
            i += 1

    def head(self, stream_id: str) -> StreamHead | None:
        rows = self._run(
            f"SELECT {_HEAD_COLUMNS}, nextval(%s), pg_current_xact_id()::text FROM streams "
            "WHERE stream_id = %s FOR UPDATE",
            (self._rec._sequence, stream_id),
            "locking a stream head",
        )
        if not rows:
            return None
        *head, position, self.xid = rows[0]
        self._spare.append(position)
        self.heads[stream_id] = found = StreamHead(*head)
        return found

    def create_stream(self, head: StreamHead) -> None:
        rows = self._run(
            f"INSERT INTO streams ({_HEAD_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
            "ON CONFLICT (stream_id) DO NOTHING RETURNING pg_current_xact_id()::text",
            head.as_row(),
            "creating a stream",
        )
        if not rows:
            raise ConflictError(f"stream {head.stream_id!r} exists already")
        self.xid = rows[0][0]
        self.heads[head.stream_id] = head

    def records_by_keys(self, stream_id: str, keys: Sequence[str]) -> dict[str, Record]:
        if not keys:
            return {}
        rows = self._run(
            # A join on unnest keeps each key an index lookup, also under a generic plan.
            f"SELECT {_RECORD_COLUMNS} FROM unnest(%s::text[]) AS k(wanted) JOIN events "
            "ON stream_id = %s AND key IS NOT NULL AND key = wanted",
            (list(keys), stream_id),
            "looking up idempotency keys",
        )
        return {str(rec.key): rec for rec in (Record(*row) for row in rows)}

    def records_at(self, stream_id: str, versions: Sequence[int]) -> list[Record]:
        if not versions:
            return []
        rows = self._run(
            f"SELECT {_RECORD_COLUMNS} FROM events WHERE stream_id = %s AND version = ANY(%s)",
            (stream_id, list(versions)),
            "looking up events",
        )
        return [Record(*row) for row in rows]

    def insert(self, records: Sequence[NewRecord]) -> list[int]:
        if len(self._spare) < len(records):
            rows = self._run(
                "SELECT nextval(%s), pg_current_xact_id()::text FROM generate_series(1, %s)",
                (self._rec._sequence, len(records) - len(self._spare)),
                "drawing positions",
            )
            self._spare += [row[0] for row in rows]
            self.xid = rows[0][1]
        self._spare.sort()
        positions, self._spare = self._spare[: len(records)], self._spare[len(records) :]
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
                _UPDATE_HEAD,
                (head.version, head.head_hash, head.updated_at, head.status, head.lease_until, head.stream_id),
            )
        )
        if head.stream_id in self.heads:
            self.heads[head.stream_id] = head

    def commit(self) -> None:
        if not self.begun:
            return
        self.backend = _backend(self.conn)
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


_UPDATE_HEAD: LiteralString = (
    "UPDATE streams SET version = %s, head_hash = %s, updated_at = %s, status = %s, lease_until = %s "
    "WHERE stream_id = %s"
)
_INSERT_SQL: dict[int, LiteralString] = {}


def _append_sql(rows: int) -> LiteralString:
    """The one statement of a lone append of ``rows`` events against a guessed head (cached per count).

    The head update matches only the guessed version and hash; it also locks the head and
    hands the insert its conversation and tenant, so a stale guess inserts nothing and
    returns no row. A stored key fails the statement on the unique index: nothing is written.
    """
    sql = _APPEND_SQL.get(rows)
    if sql is None:
        values = ",".join(["(%s::bigint,%s,%s,%s::integer,%s,%s,%s)"] * rows)
        sql = _APPEND_SQL[rows] = (
            "WITH head AS (UPDATE streams SET version = %s, head_hash = %s, updated_at = %s "
            "WHERE stream_id = %s AND version = %s AND head_hash = %s RETURNING conversation_id, tenant) "
            "INSERT INTO events (stream_id, version, conversation_id, tenant, event_id, type, "
            "schema_version, key, recorded_at, payload, hash) "
            "SELECT %s, r.version, head.conversation_id, head.tenant, r.event_id, r.type, r.schema_version, "
            "r.key, %s, r.payload, r.hash FROM head CROSS JOIN "
            f"(VALUES {values}) AS r(version, event_id, type, schema_version, key, payload, hash) "
            "RETURNING position"
        )
    return sql


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


class _Guess(GuessedAppend):
    """A lone append sent as the one statement of :func:`_append_sql`, built against the head this
    recorder last saw (see :mod:`chatledger.store.backends.guess`): it writes only if that head is
    current and no key is stored, and commits (it runs in autocommit)."""

    def __init__(self, rec: PostgresRecorder) -> None:
        super().__init__()
        self._rec = rec

    def remembered(self, stream_id: str) -> StreamHead | None:
        return self._rec._heads.get(stream_id)

    def send(self, head: StreamHead, records: Sequence[NewRecord]) -> list[int]:
        positions = self._rec._append_guessed(head, records)
        if positions is None:
            raise Miss
        return positions

    def remember(self, head: StreamHead) -> None:
        self._rec._remember({head.stream_id: head})


class PostgresRecorder(PagedLog):
    """The PostgreSQL implementation of :class:`~chatledger.store.backends.recorder.Recorder`.

    Args:
        url: a libpq URL; tables live in its ``search_path`` (``?options=-csearch_path%3Dmyschema``).
            The query options ``pool_min``, ``pool_max``, ``timeout`` and ``read_wait`` are read here.
        pool_min: connections the pool keeps open.
        pool_max: connections the pool may open.
        timeout: seconds to wait for a connection (or for a lost commit's outcome) before
            raising BackendUnavailable.
        read_wait: seconds a global-log read waits for older transactions to end so that it
            includes every event committed before it began (see docs/postgres.md).

    Raises:
        BackendUnavailable: the server cannot be reached or the schema cannot be created.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_min: int = 1,
        pool_max: int = 10,
        timeout: float = 10.0,
        read_wait: float = 5.0,
    ) -> None:
        conninfo, ours = split_url(url)
        self.pool_min = int(ours.get("pool_min", pool_min))
        self.pool_max = max(int(ours.get("pool_max", pool_max)), self.pool_min, 1)
        self.timeout = float(ours.get("timeout", timeout))
        self.read_wait = float(ours.get("read_wait", read_wait))
        self._local = threading.local()
        self._heads: dict[str, StreamHead] = {}  # the last head this recorder saw of each stream
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            conninfo,
            min_size=self.pool_min,
            max_size=self.pool_max,
            timeout=self.timeout,
            kwargs={"autocommit": True},
            configure=_identify,
            open=False,
            name="chatledger",
        )
        try:
            self._pool.open(wait=True, timeout=self.timeout)
            self._migrate()
            self._sequence = self._sequence_name()
        except (psycopg.Error, PoolTimeout) as exc:
            self._pool.close()
            _raise(exc, "opening the PostgreSQL store")
        except BaseException:
            self._pool.close()
            raise

    # -- schema --------------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Create or upgrade the schema once, however many processes start at the same moment."""
        with self._pool.connection() as conn:
            row = conn.execute("SELECT to_regclass('chatledger_schema') IS NOT NULL, current_schema()").fetchone()
            assert row is not None
            if row[1] is None:
                raise BackendUnavailable("the search_path names no existing schema to create tables in")
            if row[0]:
                current = conn.execute("SELECT COALESCE(max(version), 0) FROM chatledger_schema").fetchone()
                if current is not None and current[0] >= SCHEMA_VERSION:
                    return
            with conn.transaction():
                # Per-schema lock: concurrent starters wait here instead of racing on the catalog.
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('chatledger:' || current_schema(), 0))")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS chatledger_schema "
                    "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                done = conn.execute("SELECT COALESCE(max(version), 0) FROM chatledger_schema").fetchone()
                have = int(done[0]) if done else 0
                for version, sql in MIGRATIONS:
                    if version > have:
                        conn.execute(sql)
                        conn.execute("INSERT INTO chatledger_schema (version) VALUES (%s)", (version,))

    def _sequence_name(self) -> str:
        """The schema-qualified name of the position sequence (fixed for this recorder's life)."""
        rows = self._query("SELECT pg_get_serial_sequence('events', 'position')", (), "finding the sequence")
        return str(rows[0][0])

    # -- connections ---------------------------------------------------------------------------

    def _getconn(self) -> psycopg.Connection[Any]:
        try:
            return self._pool.getconn()
        except (psycopg.Error, PoolTimeout) as exc:
            _raise(exc, "getting a connection")

    def _replace_connection(self, dead: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
        """Give back a dead connection, have the pool drop its other dead ones, get a fresh one."""
        dead.close()
        self._pool.putconn(dead)
        self._pool.check()
        return self._getconn()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside a transaction: committed at the end, rolled back on error.

        Read models keep their tables and tracking position on this database through it, so that
        an update and its position commit together. psycopg errors raised in the block are
        translated to chatledger errors.
        """
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield conn
        except (psycopg.Error, PoolTimeout) as exc:
            _raise(exc, "in a read-model transaction")

    @contextmanager
    def autocommit(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection outside any transaction, for statements that cannot run in one (VACUUM)."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.Error, PoolTimeout) as exc:
            _raise(exc, "in an autocommit statement")

    @contextmanager
    def write(self) -> Iterator[_Tx]:
        """Open a write transaction: committed when the block ends, rolled back on error."""
        if getattr(self._local, "writing", False):
            raise RuntimeError("chatledger write transactions do not nest")
        tx = _Tx(self, self._getconn())
        self._local.writing = True
        held = True
        try:
            try:
                yield tx
            except BaseException:
                tx.rollback()
                raise
            try:
                tx.commit()
            except psycopg.Error as exc:
                if not _dead(exc, tx.conn):
                    tx.rollback()
                    _raise(exc, "committing")
                held = False
                self._pool.putconn(tx.conn)  # free the slot: settling needs a connection
                self._settle_lost_commit(tx, exc)
            self._remember(tx.heads)
        finally:
            self._local.writing = False
            if held:
                self._pool.putconn(tx.conn)

    def append_alone(self, body: Callable[[WriteTransaction], T]) -> T:
        """Run ``body``, a transaction holding one append to one stream, in a single statement.

        The append is built against the head this recorder last saw of the stream and sent as
        one statement (one round trip, no BEGIN or COMMIT): the server writes it only if that
        head is still current and none of its keys is stored. Otherwise (a
        stream this recorder has not seen, another writer appended meanwhile, a duplicate, an
        error decided on the guessed head) nothing was written and ``body`` runs again in an
        ordinary write transaction, on the locked head. ``body`` must not change the stream's
        status or lease.
        """
        guess = None if getattr(self._local, "writing", False) else _Guess(self)
        return append_alone(body, guess, self.write)

    def _remember(self, heads: dict[str, StreamHead]) -> None:
        if len(self._heads) + len(heads) > _CACHED_HEADS:
            self._heads.clear()
        self._heads.update(heads)

    def _append_guessed(self, head: StreamHead, records: Sequence[NewRecord]) -> list[int] | None:
        """Send the append statement: the positions written, or None when the head had moved."""
        if any(r.recorded_at != records[0].recorded_at for r in records):
            return None
        last, at = records[-1], records[0].recorded_at
        params: list[Any] = [last.version, last.hash, at, head.stream_id, head.version, head.head_hash]
        params += [head.stream_id, at]
        for r in records:
            params += [r.version, r.event_id, r.type, r.schema_version, r.key, r.payload, r.hash]
        sql = _append_sql(len(records))
        for attempt in range(self.pool_max + 2):
            conn = self._getconn()
            backend, held = _backend(conn), True
            try:
                rows = conn.execute(sql, params).fetchall()
                # No row: the head had moved. Positions are drawn in row order, so sorted = in order.
                return sorted(row[0] for row in rows) if rows else None
            except psycopg.Error as exc:
                if not _dead(exc, conn):
                    _raise(exc, "appending")
                conn.close()
                held = False
                self._pool.putconn(conn)  # free the slot: settling needs a connection
                self._pool.check()
                landed = self._settle_lost_statement(backend, [r.event_id for r in records], exc)
                if landed is not None:
                    return landed
                if attempt > self.pool_max:
                    _raise(exc, "appending (nothing was written)")
            finally:
                if held:
                    self._pool.putconn(conn)
        raise AssertionError("unreachable")

    def _settle_lost_statement(
        self, backend: _Backend | None, event_ids: list[str], exc: psycopg.Error
    ) -> list[int] | None:
        """The connection died during an autocommit write: its positions if it committed, else None."""
        return self._settle(backend, event_ids, exc, "appending")

    def _settle_lost_commit(self, tx: _Tx, exc: psycopg.Error) -> None:
        """The connection died during COMMIT: return if the transaction committed, else raise.

        Settled by what the transaction wrote (its event ids), never by its transaction id: after
        a crash-restart the server hands out again the ids that never reached durable WAL, so
        the status of a lost transaction's id may be another transaction's.
        """
        if not tx.event_ids:
            _raise(exc, "committing (the outcome is unknown: read back before retrying)")
        if self._settle(tx.backend, tx.event_ids, exc, "committing") is None:
            raise BackendUnavailable(
                f"the connection was lost while committing; nothing was written, retry ({_first_line(exc)})"
            ) from exc

    def _settle(
        self, backend: _Backend | None, event_ids: list[str], exc: psycopg.Error, what: str
    ) -> list[int] | None:
        """Whether a write whose outcome was lost stored its events: their positions, or None.

        Waits (on fresh connections, up to ``timeout``) until the server process that ran the
        write has ended (it exited, or the server restarted): its transaction has then
        committed or rolled back for good, and a lookup of its event ids, in a snapshot taken
        afterwards, tells which. Still unknown after ``timeout``: BackendUnavailable.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                with self._pool.connection() as conn:
                    alive = (
                        backend is not None
                        and conn.execute(
                            "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND backend_start = %s", backend
                        ).fetchone()
                    )
                    if not alive:  # looked up after it ended, in a later snapshot
                        row = conn.execute(
                            "SELECT array_agg(position ORDER BY version) FROM events WHERE event_id = ANY(%s)",
                            (event_ids,),
                        ).fetchone()
                        return None if row is None or row[0] is None else [int(p) for p in row[0]]
            except (psycopg.Error, PoolTimeout):
                pass
            if time.monotonic() > deadline:
                raise BackendUnavailable(
                    f"the connection was lost while {what} and the outcome is still unknown; "
                    "retrying an append with the same message ids is safe"
                ) from exc
            time.sleep(0.05)

    # -- reads ---------------------------------------------------------------------------------

    def _query(self, sql: LiteralString, params: Sequence[Any] | dict[str, Any], what: str) -> list[Any]:
        """Run a read, retrying on a fresh connection when the pooled one turns out to be dead."""
        for attempt in range(self.pool_max + 2):
            conn = self._getconn()
            try:
                return conn.execute(sql, params).fetchall()
            except psycopg.Error as exc:
                if not _dead(exc, conn) or attempt > self.pool_max:
                    _raise(exc, what)
                conn.close()
                self._pool.check()
            finally:
                self._pool.putconn(conn)
        raise AssertionError("unreachable")

    def _wait_for_horizon(self) -> None:
        """Wait until every transaction older than the newest committed event has ended.

        Then a read of the log below the snapshot's xmin includes every event committed
        before this call (read-your-writes). Gives up after ``read_wait`` seconds; the read
        then returns less, never skips.
        """
        target = self._query(
            f"SELECT {_HORIZON}::text, (SELECT max(tx_id) FROM events)::text", (), "reading the log horizon"
        )[0]
        if target[1] is None or int(target[1]) < int(target[0]):
            return
        deadline = time.monotonic() + self.read_wait
        delay = 0.001
        while time.monotonic() < deadline:
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
            passed = self._query(f"SELECT {_HORIZON} > %s::xid8", (target[1],), "reading the log horizon")
            if passed[0][0]:
                return

    def read_stream(self, stream_id: str, after: int = 0, limit: int | None = None) -> list[Record]:
        rows = self._query(
            f"SELECT {_RECORD_COLUMNS} FROM events WHERE stream_id = %s AND version > %s ORDER BY version LIMIT %s",
            (stream_id, after, limit),
            "reading a stream",
        )
        return list(map(Record._make, rows))

    def read_payloads(self, stream_id: str, type_name: str, upto: int | None = None) -> list[str]:
        rows = self._query(
            "SELECT payload FROM events WHERE stream_id = %s AND version <= %s AND type = %s ORDER BY version",
            (stream_id, (1 << 62) if upto is None else upto, type_name),
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
        sql: LiteralString = (
            "SELECT version, payload FROM events WHERE stream_id = %s AND version > %s AND version <= %s AND type = %s"
        )
        params: list[Any] = [stream_id, after, (1 << 62) if upto is None else upto, type_name]
        if conversation_of is not None:
            sql += " AND EXISTS (SELECT 1 FROM streams WHERE stream_id = %s AND tenant = %s AND kind = 'conversation')"
            params += [stream_id, conversation_of]
        sql += " ORDER BY version DESC LIMIT %s"
        rows = self._query(sql, (*params, newest), "reading payloads")
        return [(row[0], row[1]) for row in reversed(rows)]

    def read_all(self, after: int = 0, limit: int | None = None, tenant: str | None = None) -> list[Record]:
        self._wait_for_horizon()
        params = {"after": after, "limit": limit, "tenant": tenant}
        if tenant is None:
            sql: LiteralString = (
                f"SELECT {_RECORD_COLUMNS} FROM events WHERE tx_id < {_HORIZON} "
                f"AND (tx_id, position) > {_CURSOR} ORDER BY tx_id, position LIMIT %(limit)s"
            )
        else:
            sql = (
                f"SELECT {_RECORD_COLUMNS} FROM events WHERE tenant = %(tenant)s AND tx_id < {_HORIZON} "
                f"AND (tx_id, position) > {_CURSOR} ORDER BY tx_id, position LIMIT %(limit)s"
            )
        return list(map(Record._make, self._query(sql, params, "reading the global log")))

    def get_head(self, stream_id: str) -> StreamHead | None:
        rows = self._query(
            f"SELECT {_HEAD_COLUMNS} FROM streams WHERE stream_id = %s",
            (stream_id,),
            "reading a stream head",
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
        rows = self._query(
            f"SELECT {_HEAD_COLUMNS} FROM streams WHERE {'TRUE' if kind is None else 'kind = %(kind)s'} "
            "AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s) "
            "AND (%(status)s::text[] IS NULL OR status = ANY(%(status)s)) "
            "AND (%(conv)s::text IS NULL OR conversation_id = %(conv)s) "
            "ORDER BY created_at, stream_id LIMIT %(limit)s",
            {
                "kind": kind,
                "tenant": tenant,
                "status": list(status) if status else None,
                "conv": conversation_id,
                "limit": limit,
            },
            "listing streams",
        )
        return [StreamHead(*row) for row in rows]

    def last_position(self) -> int:
        """The position of the last event in log order that readers can see (0 when empty)."""
        self._wait_for_horizon()
        rows = self._query(
            f"SELECT position FROM events WHERE tx_id < {_HORIZON} ORDER BY tx_id DESC, position DESC LIMIT 1",
            (),
            "reading the last position",
        )
        return int(rows[0][0]) if rows else 0

    def close(self) -> None:
        self._pool.close()
