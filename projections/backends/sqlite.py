"""Read models in a SQLite file, materialized with sqlite-utils.

The read models live in **their own file next to the log** (``chat.db`` ->
``chat.views.db``), not in the log's file. Why a separate file:

* the runner's writes never take the log's write lock, so projecting (and a
  full rebuild) never delays an append, and appenders never delay projecting;
* what must be atomic is *tables + tracking row*, and both live in this file,
  so every batch is still one transaction: exactly-once and crash-safe;
* the read models are disposable: delete the file and they are rebuilt.
  That also makes ``synchronous=NORMAL`` safe here: a power cut can only lose
  the last committed batches, and their tracking row with them, so they are
  simply applied again.

Each batch runs ``BEGIN IMMEDIATE`` on the views file (the write lock is taken
before anything is read, so the reads that precede its writes can never hit
``SQLITE_BUSY_SNAPSHOT``), reads the tracking rows under that lock, and commits
only if they still hold the position the batch was read from (the tracking
update is a compare-and-set as well): a second runner process waits for the
lock, finds the position moved, drops its batch and re-reads from there.
sqlite-utils creates the tables and indexes; one ``Database`` is kept per
connection, and connections are opened and closed only by this module.

Full-text indexes (FTS5, external content, the same triggers as sqlite-utils'
``enable_fts``; ``content_rowid`` when the table's key is one integer, and no
per-row document sizes) are loaded in bulk: a fresh projection's FTS table
starts without triggers, its rows are inserted without being tokenized one by
one, and :meth:`SQLiteReadModels.settle` indexes them all at once and adds the
triggers when the runner has caught up (measured on a 1M-event rebuild: the
triggers cost ~2 µs per row, one ``rebuild`` ~0.85 s). Until then a search that
does not catch up first finds none of the rows loaded since the projection started over.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from chatledger.projections.tables import Key, Row, Table, Values
from chatledger.projections.tracking import ProjectionState, now_iso
from chatledger.store import BackendUnavailable, ConcurrencyError
from chatledger.store.backends.sqlite.connection import PerThread, connect

__all__ = ["SQLiteReadModels", "views_path"]

_TYPES: dict[str, Any] = {"str": str, "int": int, "float": float, "json": str}

_TRACKING = """
CREATE TABLE IF NOT EXISTS projection_tracking (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    position INTEGER NOT NULL,
    events INTEGER NOT NULL,
    updated_at TEXT NOT NULL
)
"""


_TOKENIZE = "'porter unicode61 remove_diacritics 2'"
# FTS5 tables are created with columnsize=0: no per-row document sizes (the %_docsize b-tree).
# Measured on 1M rows: the bulk build takes 0.8 s instead of 1.4; bm25 ranking then tokenizes
# the matching rows to get their lengths, which made a query matching 250,000 rows 0.33 s
# instead of 0.24 (selective queries: no difference).
_BULK_HASH = 64 * 1024 * 1024  # bytes of pending terms FTS5 may hold before writing a segment
_DEFAULT_HASH = 1024 * 1024


def _triggers(table: Table) -> list[str]:
    """The FTS5 triggers sqlite-utils' ``enable_fts`` would create (same names and bodies)."""
    assert table.fts is not None
    name, fts, col = _q(table.name), _q(table.name + "_fts"), _q(table.fts)
    delete = f"INSERT INTO {fts} ({fts}, rowid, {col}) VALUES('delete', old.rowid, old.{col});"
    insert = f"INSERT INTO {fts} (rowid, {col}) VALUES (new.rowid, new.{col});"
    return [
        f"CREATE TRIGGER IF NOT EXISTS {_q(table.name + '_ai')} AFTER INSERT ON {name} BEGIN {insert} END",
        f"CREATE TRIGGER IF NOT EXISTS {_q(table.name + '_ad')} AFTER DELETE ON {name} BEGIN {delete} END",
        f"CREATE TRIGGER IF NOT EXISTS {_q(table.name + '_au')} AFTER UPDATE ON {name} BEGIN {delete} {insert} END",
    ]


def _content_rowid(table: Table) -> str:
    """``content_rowid`` when the key is one integer column (then the rowid itself): the FTS5
    index then points straight at the row, and the table needs no separate key index."""
    if len(table.pk) == 1 and table.columns[table.pk[0]] == "int":
        return f", content_rowid={_q(table.pk[0])}"
    return ""


def _rowid(table: Table) -> str:
    """The column the FTS5 index's rowids refer to (see :func:`_content_rowid`)."""
    return _q(table.pk[0]) if _content_rowid(table) else "rowid"


def views_path(log_path: str) -> str:
    """The read-model file that belongs to a log file: ``chat.db`` -> ``chat.views.db``."""
    path = Path(log_path)
    return str(path.with_name(path.stem + ".views" + (path.suffix or ".db")))


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Batch:
    def __init__(self, db: Database, names: Sequence[str], expected: int) -> None:
        self._db = db
        self._names = list(names)
        self.position = expected

    def load(self, table: Table, key: Key) -> Row | None:
        where = " AND ".join(f'"{c}" = ?' for c in table.pk)
        cur = self._db.conn.execute(f'SELECT * FROM "{table.name}" WHERE {where}', key)
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cur.description], row, strict=True))

    def write(self, table: Table, upserts: Sequence[Row], inserts: Sequence[Values]) -> None:
        # Multi-row VALUES statements: 4x faster than executemany once FTS5 triggers are on, and
        # cheaper than sqlite-utils' insert_all, which re-inspects the table and JSON-checks each value.
        cols = list(table.columns)
        keys = ",".join(_q(c) for c in table.pk)
        sets = ",".join(f"{_q(c)} = excluded.{_q(c)}" for c in cols if c not in table.pk)
        values = itemgetter(*cols) if len(cols) > 1 else lambda row: (row[cols[0]],)
        try:
            rows = list(map(values, upserts))
        except KeyError:  # a row that leaves columns out: they are NULL
            rows = [tuple(row.get(c) for c in cols) for row in upserts]
        self._insert(table, rows, f" ON CONFLICT ({keys}) DO UPDATE SET {sets}")
        self._insert(table, inserts, "")

    def _insert(self, table: Table, rows: Sequence[Values], tail: str) -> None:
        """Insert rows, leaving out of each statement the columns that are NULL in all of its rows.

        Binding None costs ~0.4 µs in CPython's ``sqlite3`` (it looks for an adapter first),
        against ~0.1 µs for a string: a column that is mostly NULL (a message's author name)
        cost ~0.5 s of a 1M-event rebuild. An omitted column is NULL (read-model columns have
        no defaults), in an upsert's ``excluded`` row as well.
        """
        cols = list(table.columns)
        per = max(1, min(500, 30_000 // len(cols)))
        for start in range(0, len(rows), per):
            chunk = rows[start : start + per]
            columns = list(zip(*chunk, strict=True))
            kept = [i for i, values in enumerate(columns) if values[0] is not None or values.count(None) != len(values)]
            if len(kept) == len(cols):
                flat = list(chain.from_iterable(chunk))
            else:
                flat = list(chain.from_iterable(zip(*(columns[i] for i in kept), strict=True)))
            one = "(" + ",".join("?" * len(kept)) + ")"
            self._db.conn.execute(
                f"INSERT INTO {_q(table.name)} ({','.join(_q(cols[i]) for i in kept)}) VALUES "
                + ",".join([one] * len(chunk))
                + tail,
                flat,
            )

    def advance(self, position: int, events: int) -> None:
        marks = ",".join("?" * len(self._names))
        cur = self._db.conn.execute(
            f"UPDATE projection_tracking SET position = ?, events = events + ?, updated_at = ? "
            f"WHERE position = ? AND name IN ({marks})",
            [position, events, now_iso(), self.position, *self._names],
        )
        if cur.rowcount != len(self._names):
            raise ConcurrencyError("projections " + ",".join(self._names), self.position, position)
        self.position = position


class SQLiteReadModels:
    """Read-model tables and their tracking rows in one SQLite file."""

    def __init__(
        self, path: str, *, busy_timeout_ms: int = 30_000, erasable: Callable[[], bool] = lambda: True
    ) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.erasable = erasable
        # Closing only releases connections: a thread's next call opens a new one.
        self._dbs: PerThread[Database] = PerThread(self._open, lambda db: db.conn.close())
        with self._write() as db:
            db.conn.execute(_TRACKING)

    def _open(self) -> Database:
        try:
            conn = connect(self.path, busy_timeout_ms=self.busy_timeout_ms, synchronous="NORMAL")
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"opening the read models {self.path}: {exc}") from exc
        # One Database per connection: its first upsert probes with DDL; never close it through sqlite-utils.
        return Database(conn, recursive_triggers=False, execute_plugins=False)

    @contextmanager
    def _write(self) -> Iterator[Database]:
        with self._dbs.use() as db:
            try:
                db.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise BackendUnavailable(f"locking the read models {self.path}: {exc}") from exc
            try:
                yield db
            except BaseException:
                db.conn.execute("ROLLBACK")
                raise
            db.conn.execute("COMMIT")

    def _create(self, db: Database, tables: Sequence[Table]) -> None:
        for table in tables:
            db.table(table.name).create(
                {c: _TYPES[t] for c, t in table.columns.items()}, pk=table.pk, if_not_exists=True
            )
            for cols in table.indexes:
                db.table(table.name).create_index(list(cols), if_not_exists=True)
            if table.fts:
                # The index starts without its triggers (bulk mode): see settle().
                db.conn.execute(
                    f"CREATE VIRTUAL TABLE IF NOT EXISTS {_q(table.name + '_fts')} USING FTS5 "
                    f"({_q(table.fts)}, tokenize={_TOKENIZE}, content={_q(table.name)}{_content_rowid(table)}, "
                    "columnsize=0)"
                )

    def settle(self, tables: Sequence[Table]) -> None:
        """Bring full-text indexes out of bulk mode: index every row once, then keep up by trigger.

        A projection's FTS5 table is created without its triggers, so that a rebuild or a
        first catch-up inserts rows without tokenizing each one through a trigger; the runner
        calls this when it has caught up, and one transaction then runs FTS5's ``rebuild``
        and creates the triggers. The absence of the triggers is the durable mark of bulk
        mode: a runner killed mid-rebuild leaves them absent, and the next catch-up ends here.
        """
        with self._dbs.use() as db:
            pending = [t for t in tables if t.fts and not self._has_triggers(db, t)]
        if not pending:
            return
        with self._write() as db:
            for table in pending:
                if self._has_triggers(db, table):
                    continue
                fts = _q(table.name + "_fts")
                # A large pending-term buffer for the bulk build: fewer, bigger segments and less
                # merging (measured: ~0.3 s of 1.7 on 1M rows); back to the default afterwards.
                db.conn.execute(f"INSERT INTO {fts}({fts}, rank) VALUES('hashsize', {_BULK_HASH})")
                db.conn.execute(f"INSERT INTO {fts}({fts}) VALUES('rebuild')")
                db.conn.execute(f"INSERT INTO {fts}({fts}, rank) VALUES('hashsize', {_DEFAULT_HASH})")
                for sql in _triggers(table):
                    db.conn.execute(sql)

    @staticmethod
    def _has_triggers(db: Database, table: Table) -> bool:
        names = [f"{table.name}_{suffix}" for suffix in ("ai", "ad", "au")]
        found = db.conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name IN (?, ?, ?)", names
        ).fetchone()
        return bool(found[0] == len(names))

    def _drop(self, db: Database, tables: Sequence[Table], *, secure: bool) -> None:
        """Drop tables; without ``secure``, their freed pages are left as they are, not zeroed.

        SQLite's ``secure_delete`` (on in this build) zeroes every freed page, which is most of
        the cost of dropping a big table (~0.6 s of a 1M-event rebuild). It matters only when
        the log can be erased (it holds encrypted conversations): "rebuild after erasing" must
        then purge the plaintext the read models held. A plaintext log keeps that same text
        forever, so zeroing its copy here protects nothing.
        """
        if secure:
            self._drop_tables(db, tables)
            return
        before = db.conn.execute("PRAGMA secure_delete").fetchone()[0]
        db.conn.execute("PRAGMA secure_delete = OFF")
        try:
            self._drop_tables(db, tables)
        finally:
            db.conn.execute(f"PRAGMA secure_delete = {int(before)}")

    def _drop_tables(self, db: Database, tables: Sequence[Table]) -> None:
        for table in tables:
            if table.fts:
                for suffix in ("_fts",):
                    db.conn.execute(f'DROP TABLE IF EXISTS "{table.name}{suffix}"')
                for trigger in ("ai", "ad", "au"):
                    db.conn.execute(f'DROP TRIGGER IF EXISTS "{table.name}_{trigger}"')
            db.conn.execute(f'DROP TABLE IF EXISTS "{table.name}"')

    def prepare(self, name: str, version: int, tables: Sequence[Table], *, reset: bool = False) -> bool:
        """Create a projection's tables and tracking row; start over when reset or its version changed.

        Returns True when the projection starts from zero.
        """
        with self._write() as db:
            row = db.conn.execute("SELECT version FROM projection_tracking WHERE name = ?", [name]).fetchone()
            fresh = reset or row is None or row[0] != version
            if fresh:
                self._drop(db, tables, secure=self.erasable())
                db.conn.execute(
                    "INSERT OR REPLACE INTO projection_tracking (name, version, position, events, updated_at) "
                    "VALUES (?, ?, 0, 0, ?)",
                    [name, version, now_iso()],
                )
            self._create(db, tables)
        if fresh and self.erasable():
            self._purge_wal()
        return fresh

    def _purge_wal(self) -> None:
        """Copy the WAL into the file and truncate it: the dropped tables' old pages leave the -wal.

        Dropping zeroed their pages in the file's new version; the WAL still holds their old
        versions until a checkpoint. A reader of an older snapshot defers that (the busy
        timeout bounds the wait); the next rebuild or ``purge`` finishes it.
        """
        with self._dbs.use() as db:
            db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

    def states(self) -> list[ProjectionState]:
        """Every projection's tracking row."""
        with self._dbs.use() as db:
            rows = db.conn.execute(
                "SELECT name, version, position, events, updated_at FROM projection_tracking ORDER BY name"
            ).fetchall()
        return [ProjectionState(*row) for row in rows]

    @contextmanager
    def batch(self, names: Sequence[str], expected: int) -> Iterator[_Batch | None]:
        """A write transaction for projections at ``expected``; None when one of them moved on."""
        with self._write() as db:
            marks = ",".join("?" * len(names))
            rows = db.conn.execute(
                f"SELECT position FROM projection_tracking WHERE name IN ({marks})", list(names)
            ).fetchall()
            if len(rows) != len(names) or any(r[0] != expected for r in rows):
                yield None
                return
            yield _Batch(db, names, expected)

    def rows(
        self,
        table: Table,
        where: dict[str, Any],
        order_by: str | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> list[Row]:
        """Rows of a table matching ``column = value`` filters."""
        clause = " AND ".join(f'"{c}" = ?' for c in where) or "1"
        order = f' ORDER BY "{order_by}"{" DESC" if desc else ""}' if order_by else ""
        with self._dbs.use() as db:
            cur = db.conn.execute(
                f'SELECT * FROM "{table.name}" WHERE {clause}{order} LIMIT ?',
                [*where.values(), -1 if limit is None else limit],
            )
            found = cur.fetchall()
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in found]

    def search(self, table: Table, query: str, where: dict[str, Any], limit: int) -> list[Row]:
        """Full-text matches (FTS5, best first), each with a ``snippet`` around the matched terms."""
        fts = f"{table.name}_fts"
        clause = "".join(f' AND t."{c}" = ?' for c in where)
        sql = (
            f"SELECT t.*, snippet(\"{fts}\", 0, '[', ']', '…', 16) AS snippet "
            f'FROM "{fts}" JOIN "{table.name}" t ON t.{_rowid(table)} = "{fts}".rowid '
            f'WHERE "{fts}" MATCH ?{clause} ORDER BY "{fts}".rank LIMIT ?'
        )
        match = _fts_literal(query)
        if not match:
            return []
        with self._dbs.use() as db:
            cur = db.conn.execute(sql, [match, *where.values(), limit])
            found = cur.fetchall()
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in found]

    def close(self) -> None:
        """Close this module's own connections; a thread in the middle of a call closes its own when it ends
        (see :class:`PerThread`), and a later call opens a new one."""
        self._dbs.close()


def _fts_literal(query: str) -> str:
    """An FTS5 query matching each whitespace-separated word of ``query`` literally (all of them).

    Each word becomes an FTS5 string (quotes doubled), so no character of the query
    (quotes, ``*``, ``NOT``, ``:``, parentheses) is taken as syntax.
    """
    return " ".join('"' + word.replace('"', '""') + '"' for word in query.split())
