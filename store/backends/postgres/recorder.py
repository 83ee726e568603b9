"""PostgreSQL backend: many workers on many machines, a global order without a global lock.

:class:`PostgresRecorder` puts together the parts, each in its own module:

- :mod:`~chatledger.store.backends.postgres.connection`: the pool, error translation
  (no psycopg error escapes), and settling a write whose reply was lost by looking up its
  event ids once the server process that ran it has ended (never by transaction id: ids
  are reissued after a crash-restart);
- :mod:`~chatledger.store.backends.postgres.appends`: write transactions that lock only the
  heads of the streams they touch, and lone appends as one autocommit statement built
  against the head this recorder last saw;
- :mod:`~chatledger.store.backends.postgres.reads`: streams, heads and the global log,
  whose positions increase in the order readers see events: a reader never passes a
  position still held by a transaction in flight;
- :mod:`~chatledger.store.backends.postgres.schema`: tables as numbered migrations.

See docs/postgres.md for the design and its trade-offs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg_pool import PoolTimeout

from chatledger.store.backends.guess import append_alone
from chatledger.store.backends.postgres.appends import GuessedStatement, HeadCache, WriteTx
from chatledger.store.backends.postgres.connection import (
    Connections,
    first_line,
    is_dead,
    raise_translated,
    split_url,
    translate,
)
from chatledger.store.backends.postgres.reads import LogReader
from chatledger.store.backends.postgres.schema import MIGRATIONS, SCHEMA_VERSION, migrate
from chatledger.store.backends.recorder import PagedLog, WriteTransaction
from chatledger.store.errors import BackendUnavailable

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "PostgresRecorder", "split_url", "translate"]

T = TypeVar("T")


class PostgresRecorder(LogReader, PagedLog):
    """The PostgreSQL implementation of :class:`~chatledger.store.backends.recorder.Recorder`.

    Its reads are :class:`~chatledger.store.backends.postgres.reads.LogReader`'s.

    Args:
        url: a libpq URL; tables live in its ``search_path`` (``?options=-csearch_path%3Dmyschema``).
            The query options ``pool_min``, ``pool_max``, ``timeout`` and ``read_wait`` are read here.
        pool_min: connections the pool keeps open.
        pool_max: connections the pool may open.
        timeout: seconds to wait for a connection (or for a lost commit's outcome) before
            raising BackendUnavailable.
        read_wait: seconds a global-log read waits for transactions in flight to end so that it
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
        self._db = Connections(conninfo, self.pool_min, self.pool_max, self.timeout)
        LogReader.__init__(self, self._db, float(ours.get("read_wait", read_wait)))
        self._local = threading.local()
        self._heads = HeadCache()
        try:
            self._db.open()
            with self._db.connection() as conn:
                migrate(conn)
            rows = self._db.query(
                "SELECT pg_get_serial_sequence('events', 'position')", (), "finding the position sequence"
            )
            self._sequence = str(rows[0][0])
        except (psycopg.Error, PoolTimeout) as exc:
            self._db.close()
            raise_translated(exc, "opening the PostgreSQL store")
        except BaseException:
            self._db.close()
            raise

    # -- writes --------------------------------------------------------------------------------

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside a transaction: committed at the end, rolled back on error.

        Read models keep their tables and tracking position on this database through it, so that
        an update and its position commit together. psycopg errors raised in the block are
        translated to chatledger errors.
        """
        with self._db.transaction() as conn:
            yield conn

    @contextmanager
    def autocommit(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection outside any transaction, for statements that cannot run in one (VACUUM)."""
        try:
            with self._db.connection() as conn:
                yield conn
        except (psycopg.Error, PoolTimeout) as exc:
            raise_translated(exc, "in an autocommit statement")

    @contextmanager
    def write(self) -> Iterator[WriteTx]:
        """Open a write transaction: committed when the block ends, rolled back on error."""
        if getattr(self._local, "writing", False):
            raise RuntimeError("chatledger write transactions do not nest")
        tx = WriteTx(self._db, self._db.get(), self._sequence)
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
                if not is_dead(exc, tx.conn):
                    tx.rollback()
                    raise_translated(exc, "committing")
                held = False
                self._db.put(tx.conn)  # free the slot: settling needs a connection
                self._settle_lost_commit(tx, exc)
            self._heads.remember(tx.heads)
        finally:
            self._local.writing = False
            if held:
                self._db.put(tx.conn)

    def _settle_lost_commit(self, tx: WriteTx, exc: psycopg.Error) -> None:
        """The connection died during COMMIT: return if the transaction committed, else raise."""
        if not tx.event_ids:
            raise_translated(exc, "committing (the outcome is unknown: read back before retrying)")
        if self._db.settle(tx.process, tx.event_ids, exc, "committing") is None:
            raise BackendUnavailable(
                f"the connection was lost while committing; nothing was written, retry ({first_line(exc)})"
            ) from exc

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
        writing = getattr(self._local, "writing", False)
        guess = None if writing else GuessedStatement(self._db, self._heads, self._sequence)
        return append_alone(body, guess, self.write)

    def close(self) -> None:
        self._db.close()
