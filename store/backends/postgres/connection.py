"""PostgreSQL connections: the pool, error translation, and settling writes whose outcome was lost.

Every psycopg and pool error is translated here (:func:`translate`), so none escapes the
backend. A pooled connection found dead at the first statement of a read or a transaction
is replaced and the statement sent again (nothing had run). A write whose reply was lost
(the connection died during ``COMMIT`` or during an autocommit statement) is settled by
:meth:`Connections.settle`: once the server process that ran it has ended, its event ids
tell whether it committed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, LiteralString, NoReturn

import psycopg
from psycopg import errors as pgerrors
from psycopg_pool import ConnectionPool, PoolTimeout

from chatledger.store.errors import BackendUnavailable, ChatledgerError, ConflictError, ValidationError

__all__ = [
    "Connections",
    "ServerProcess",
    "first_line",
    "is_dead",
    "raise_translated",
    "server_process",
    "split_url",
    "translate",
]

_OUR_OPTIONS = {"pool_min", "pool_max", "timeout", "read_wait"}

ServerProcess = tuple[int, Any]
"""A server process: its pid and start time (a pid alone may be reused, after a restart too)."""


def translate(exc: BaseException, what: str) -> ChatledgerError:
    """The chatledger error for a psycopg (or pool) error raised while doing ``what``."""
    if isinstance(exc, ChatledgerError):
        return exc
    if isinstance(exc, psycopg.IntegrityError):
        return ConflictError(f"{what}: {first_line(exc)}")
    if isinstance(exc, psycopg.DataError):
        return ValidationError("payload", f"PostgreSQL cannot store it: {first_line(exc)}")
    if isinstance(exc, pgerrors.DeadlockDetected | pgerrors.SerializationFailure):
        # Two writers racing (typically to create the same stream) locked in opposite orders:
        # the loser is rolled back, exactly like losing a unique-key race.
        return ConflictError(f"{what}: a concurrent writer won ({first_line(exc)}); nothing was written")
    if isinstance(exc, pgerrors.LockNotAvailable):
        return BackendUnavailable(f"{what}: {first_line(exc)}; nothing was written, retry")
    if isinstance(exc, PoolTimeout):
        return BackendUnavailable(f"{what}: no PostgreSQL connection became available ({exc})")
    return BackendUnavailable(f"{what}: PostgreSQL said {first_line(exc)}")


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (psycopg adds context lines)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def raise_translated(exc: BaseException, what: str) -> NoReturn:
    """Raise :func:`translate`'s error for ``exc``, chained to it."""
    raise translate(exc, what) from exc


def is_dead(exc: BaseException, conn: psycopg.Connection[Any] | None) -> bool:
    """Whether ``exc`` means the connection is gone (so a fresh one may be tried)."""
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and conn is not None:
        return bool(conn.broken or conn.closed)
    return isinstance(exc, pgerrors.AdminShutdown | pgerrors.CrashShutdown)


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


def _identify(conn: psycopg.Connection[Any]) -> None:
    """Pool hook: note which server process a new connection talks to."""
    row = conn.execute("SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()").fetchone()
    conn.chatledger_process = tuple(row) if row else None  # type: ignore[attr-defined]


def server_process(conn: psycopg.Connection[Any]) -> ServerProcess | None:
    """The server process behind a pooled connection (None when it could not be told)."""
    found: ServerProcess | None = getattr(conn, "chatledger_process", None)
    return found


class Connections:
    """The pool of autocommit connections, with the retry and settling rules of the backend.

    Args:
        conninfo: a libpq URL (without chatledger's options).
        pool_min: connections the pool keeps open.
        pool_max: connections the pool may open.
        timeout: seconds to wait for a connection, or for a lost write's outcome.
    """

    def __init__(self, conninfo: str, pool_min: int, pool_max: int, timeout: float) -> None:
        self.pool_max = pool_max
        self.timeout = timeout
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            conninfo,
            min_size=pool_min,
            max_size=pool_max,
            timeout=timeout,
            kwargs={"autocommit": True},
            configure=_identify,
            open=False,
            name="chatledger",
        )

    def open(self) -> None:
        """Open the pool, waiting up to ``timeout`` for its first connections."""
        self._pool.open(wait=True, timeout=self.timeout)

    def close(self) -> None:
        """Close every connection."""
        self._pool.close()

    def get(self) -> psycopg.Connection[Any]:
        """A pooled connection (give it back with :meth:`put`)."""
        try:
            return self._pool.getconn()
        except (psycopg.Error, PoolTimeout) as exc:
            raise_translated(exc, "getting a connection")

    def put(self, conn: psycopg.Connection[Any]) -> None:
        """Give a connection back (a closed or broken one is discarded by the pool)."""
        self._pool.putconn(conn)

    def discard(self, dead: psycopg.Connection[Any]) -> None:
        """Give back a dead connection and have the pool drop its other dead ones."""
        dead.close()
        self._pool.putconn(dead)
        self._pool.check()

    def replace(self, dead: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
        """Discard a dead connection and get a fresh one."""
        self.discard(dead)
        return self.get()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection, untranslated errors (for callers that handle psycopg's own)."""
        with self._pool.connection() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside a transaction: committed at the end, rolled back on error.

        psycopg errors raised in the block are translated to chatledger errors.
        """
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield conn
        except (psycopg.Error, PoolTimeout) as exc:
            raise_translated(exc, "in a read-model transaction")

    def query(self, sql: LiteralString, params: Sequence[Any] | dict[str, Any], what: str) -> list[Any]:
        """Run a read, retrying on a fresh connection when the pooled one turns out to be dead."""
        for attempt in range(self.pool_max + 2):
            conn = self.get()
            try:
                return conn.execute(sql, params).fetchall()
            except psycopg.Error as exc:
                if not is_dead(exc, conn) or attempt > self.pool_max:
                    raise_translated(exc, what)
                conn.close()
                self._pool.check()
            finally:
                self._pool.putconn(conn)
        raise AssertionError("unreachable")

    def settle(
        self, process: ServerProcess | None, event_ids: Sequence[str], exc: psycopg.Error, what: str
    ) -> list[int] | None:
        """Whether a write whose outcome was lost stored its events: their positions, or None.

        Waits (on fresh connections, up to ``timeout``) until the server process that ran the
        write has ended (it exited, or the server restarted): its transaction has then
        committed or rolled back for good, and a lookup of its event ids, in a snapshot taken
        afterwards, tells which. Never by transaction id: after a crash-restart the server hands
        out again the ids that never reached durable WAL, so a lost transaction's id may name
        another, committed one. Still unknown after ``timeout``: BackendUnavailable.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                with self._pool.connection() as conn:
                    alive = (
                        process is not None
                        and conn.execute(
                            "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND backend_start = %s", process
                        ).fetchone()
                    )
                    if not alive:  # looked up after it ended, in a later snapshot
                        row = conn.execute(
                            "SELECT array_agg(position ORDER BY position) FROM events WHERE event_id = ANY(%s)",
                            (list(event_ids),),
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
