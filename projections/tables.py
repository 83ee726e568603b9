"""What a projection is, and the tables it folds events into.

A :class:`Projection` is a pure fold: ``apply(tables, event)`` reads and writes
rows of its own :class:`Table` s through a :class:`Tables` object and does no
I/O. :class:`Tables` is a write-back buffer over one batch: rows read once are
cached, rows written are kept in memory, and the runner flushes them into the
backend's read-model store in the same transaction that moves the projection's
position. The same fold therefore materializes into SQLite (sqlite-utils),
PostgreSQL or plain dicts, and a batch touches each row at most twice (one
load, one write) however many events hit it.

A projection may also offer a fast path, :class:`BatchFold`: ``apply_batch``
folds a whole page of the log at once (its columns, see
:mod:`chatledger.projections.pages`), reading the JSON payloads the runner
decoded (once, shared by every projection of the batch, and only for the
``payload_types`` some projection asked for) instead of validated pydantic
events. The built-in projections use it on catch-up and rebuild, where decoding
and per-event row copies dominated; ``apply`` stays their reference fold, and a
test holds both to the same tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, ClassVar, Protocol, runtime_checkable

from chatledger.projections.pages import Page
from chatledger.store import Event

__all__ = ["Batch", "BatchFold", "Payload", "Projection", "Table", "Tables", "Values"]

Row = dict[str, Any]
Values = tuple[Any, ...]  # a row's values in its table's column order
Key = tuple[Any, ...]
Payload = dict[str, Any]


@dataclass(frozen=True)
class Table:
    """A read-model table: name, columns (``str``, ``int``, ``float`` or ``json``), key and full-text column."""

    name: str
    columns: dict[str, str]
    pk: tuple[str, ...]
    fts: str | None = None
    indexes: tuple[tuple[str, ...], ...] = field(default=())

    def key(self, row: Row) -> Key:
        """The primary-key tuple of a row."""
        return tuple(row[c] for c in self.pk)


class Projection(Protocol):
    """A named read model: its tables and a pure fold of events into them.

    ``version`` is bumped whenever the tables or the fold change; the runner
    then rebuilds the projection from zero. ``types`` lists the event types the
    fold reads (None for all), so the runner skips decoding the others.
    """

    name: ClassVar[str]
    version: ClassVar[int]
    tables: ClassVar[tuple[Table, ...]]
    types: ClassVar[frozenset[str] | None]

    def apply(self, tables: Tables, event: Event) -> None:
        """Fold one event into the tables (no I/O: reads and writes go through ``tables``)."""


@runtime_checkable
class BatchFold(Projection, Protocol):
    """A projection with a fast path over pages of the log (see the module docstring).

    ``payload_types`` lists the event types whose payloads ``apply_batch`` reads;
    the runner hands it ``payloads[i]`` (the decoded, upcast JSON payload of the
    page's i-th event) for those types and None for every other event. A payload
    is as stored: a message's id is not filled in (read ``page.key[i]``, or
    ``page.event_id[i]`` when that is None).
    """

    payload_types: ClassVar[frozenset[str]]

    def apply_batch(self, tables: Tables, page: Page, payloads: Sequence[Payload | None]) -> None:
        """Fold a page of the log, in log order, into the tables; same result as ``apply`` on each event."""


class Batch(Protocol):
    """One backend transaction of the runner, as seen by :class:`Tables`."""

    def load(self, table: Table, key: Key) -> Row | None:
        """A stored row by primary key (None when absent)."""

    def write(self, table: Table, upserts: Sequence[Row], inserts: Sequence[Values]) -> None:
        """Store rows: ``upserts`` replace rows with the same key, ``inserts`` are new rows (their
        values in column order: what a bulk insert binds, with no dict per row)."""


class Tables:
    """The projection's view of its tables during one batch (a write-back cache)."""

    def __init__(self, batch: Batch, tables: Sequence[Table]) -> None:
        self._batch = batch
        self._tables = {t.name: t for t in tables}
        self._rows: dict[str, dict[Key, Row | None]] = {t.name: {} for t in tables}
        self._dirty: dict[str, set[Key]] = {t.name: set() for t in tables}
        self._inserts: dict[str, list[Values]] = {t.name: [] for t in tables}
        self._values = {t.name: _values_of(t) for t in tables}

    def _table(self, name: str) -> Table:
        try:
            return self._tables[name]
        except KeyError:
            raise KeyError(f"the projection has no table {name!r}") from None

    def get(self, table: str, *key: Any) -> Row | None:
        """The row with this primary key, as this batch has left it (a copy: change it, then ``put``)."""
        spec = self._table(table)
        cache = self._rows[table]
        if key not in cache:
            cache[key] = self._batch.load(spec, key)
        row = cache[key]
        return dict(row) if row is not None else None

    def put(self, table: str, row: Row) -> None:
        """Insert or replace a row by its primary key."""
        spec = self._table(table)
        key = spec.key(row)
        self._rows[table][key] = row
        self._dirty[table].add(key)

    def insert(self, table: str, row: Row) -> None:
        """Add a row that is new by construction (append-only tables: no read-back in this batch)."""
        self._table(table)
        self._inserts[table].append(self._values[table](row))

    def insert_values(self, table: str, rows: Iterable[Values]) -> None:
        """Add new rows given as values in the table's column order (the cheapest form for a
        batch fold: ~0.2 µs per row less than a dict)."""
        self._table(table)
        self._inserts[table].extend(rows)

    def flush(self) -> None:
        """Hand every change of the batch to the backend (called by the runner before it commits)."""
        for name, spec in self._tables.items():
            cache = self._rows[name]
            upserts = [row for key in self._dirty[name] if (row := cache[key]) is not None]
            if upserts or self._inserts[name]:
                self._batch.write(spec, upserts, self._inserts[name])
            self._dirty[name] = set()
            self._inserts[name] = []


def _values_of(table: Table) -> Callable[[Row], Values]:
    """A row's values in column order; columns a row leaves out are None."""
    cols = tuple(table.columns)
    pick = itemgetter(*cols)

    def values(row: Row) -> Values:
        try:
            found = pick(row)
        except KeyError:
            return tuple(row.get(c) for c in cols)
        return found if len(cols) > 1 else (found,)

    return values
