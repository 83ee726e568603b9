"""Read models in memory, for the in-memory backend: dicts of rows under one lock.

A batch holds the lock for its whole transaction and stages its writes; they
become visible together with the new position when the batch ends without
error, or vanish with it. Full-text search is a case-insensitive substring
match of every query term.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from chatledger.projections.tables import Key, Row, Table, Values
from chatledger.projections.tracking import ProjectionState, now_iso
from chatledger.store import ConcurrencyError

__all__ = ["MemoryReadModels"]

_SNIPPET = 60


class _Batch:
    def __init__(self, models: MemoryReadModels, names: Sequence[str], expected: int) -> None:
        self._models = models
        self._names = list(names)
        self.position = expected
        self.staged: dict[str, dict[Key, Row]] = {}
        self.tracking: dict[str, ProjectionState] = {}

    def load(self, table: Table, key: Key) -> Row | None:
        row = self.staged.get(table.name, {}).get(key) or self._models._tables.get(table.name, {}).get(key)
        return dict(row) if row is not None else None

    def write(self, table: Table, upserts: Sequence[Row], inserts: Sequence[Values]) -> None:
        staged = self.staged.setdefault(table.name, {})
        stored = self._models._tables.get(table.name, {})
        for values in inserts:
            row = dict(zip(table.columns, values, strict=True))
            key = table.key(row)
            if key in staged or key in stored:
                raise ConcurrencyError(f"{table.name} row {key}", 0, 1)
            staged[key] = row
        for row in upserts:
            staged[table.key(row)] = dict(row)

    def advance(self, position: int, events: int) -> None:
        for name in self._names:
            state = self._models._tracking[name]
            if state.position != self.position:
                raise ConcurrencyError(f"projection {name}", self.position, state.position)
            self.tracking[name] = replace(state, position=position, events=state.events + events, updated_at=now_iso())
        self.position = position


class MemoryReadModels:
    """Read-model tables and tracking rows in process memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tables: dict[str, dict[Key, Row]] = {}
        self._tracking: dict[str, ProjectionState] = {}

    def prepare(self, name: str, version: int, tables: Sequence[Table], *, reset: bool = False) -> bool:
        """Create a projection's tables and tracking row; start over on reset or a new version."""
        with self._lock:
            state = self._tracking.get(name)
            fresh = reset or state is None or state.version != version
            if fresh:
                for table in tables:
                    self._tables[table.name] = {}
                self._tracking[name] = ProjectionState(name, version, 0, 0, now_iso())
            for table in tables:
                self._tables.setdefault(table.name, {})
        return fresh

    def states(self) -> list[ProjectionState]:
        """Every projection's tracking row."""
        with self._lock:
            return sorted(self._tracking.values(), key=lambda s: s.name)

    @contextmanager
    def batch(self, names: Sequence[str], expected: int) -> Iterator[_Batch | None]:
        """One transaction for projections at ``expected``; None when one of them moved on."""
        with self._lock:
            if any(n not in self._tracking or self._tracking[n].position != expected for n in names):
                yield None
                return
            batch = _Batch(self, names, expected)
            yield batch
            for table, rows in batch.staged.items():
                self._tables[table].update(rows)
            self._tracking.update(batch.tracking)

    def rows(
        self,
        table: Table,
        where: dict[str, Any],
        order_by: str | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> list[Row]:
        """Rows matching ``column = value`` filters."""
        with self._lock:
            found = [
                dict(r)
                for r in self._tables.get(table.name, {}).values()
                if all(r.get(c) == v for c, v in where.items())
            ]
        if order_by:
            found.sort(key=lambda r: (r.get(order_by) is None, r.get(order_by)), reverse=desc)
        return found if limit is None else found[:limit]

    def search(self, table: Table, query: str, where: dict[str, Any], limit: int) -> list[Row]:
        """Rows whose full-text column contains every query term (case-insensitive), most hits first."""
        terms = [t.strip('"').casefold() for t in query.split() if t.strip('"')]
        if not terms or table.fts is None:
            return []
        column = table.fts
        hits: list[tuple[int, Row]] = []
        for row in self.rows(table, where):
            text = str(row.get(column) or "")
            folded = text.casefold()
            if all(t in folded for t in terms):
                at = folded.find(terms[0])
                start = max(0, at - _SNIPPET // 2)
                snippet = ("…" if start else "") + text[start : start + _SNIPPET]
                hits.append((-sum(folded.count(t) for t in terms), {**row, "snippet": snippet}))
        hits.sort(key=lambda h: h[0])
        return [row for _, row in hits[:limit]]

    def settle(self, tables: Sequence[Table]) -> None:
        """Nothing to settle: search scans the rows."""

    def close(self) -> None:
        """Nothing to release."""
