"""NULLs in read-model rows: stored as the fold wrote them, whether a whole batch's column is NULL or not."""

from __future__ import annotations

from typing import ClassVar

from chatledger.projections import ProjectionRunner, Table, Tables
from chatledger.store import Event, Store

from .conftest import fill
from .test_runner import dump

LAST = Table("test_last", {"conversation_id": "str", "note": "str", "events": "int"}, pk=("conversation_id",))
NOTES = Table("test_notes", {"position": "int", "note": "str", "version": "int"}, pk=("position",))


class Notes:
    """Writes a note or NULL per event: a note on even versions, NULL on odd ones."""

    name: ClassVar[str] = "notes"
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[Table, ...]] = (LAST, NOTES)
    types: ClassVar[frozenset[str] | None] = None

    def apply(self, tables: Tables, event: Event) -> None:
        note = f"v{event.version}" if event.version % 2 == 0 else None
        row = tables.get(LAST.name, event.conversation_id) or {"conversation_id": event.conversation_id, "events": 0}
        tables.put(LAST.name, {**row, "note": note, "events": row["events"] + 1})
        tables.insert(NOTES.name, {"position": event.position, "note": note, "version": event.version})


def test_null_columns_are_stored_as_null(store: Store) -> None:
    """Batches whose column is NULL in every row, in some rows or in none store exactly those
    values, and an upsert of NULL clears a stored value."""
    fill(store, conversations=2, messages=4)  # versions 1..5 per conversation
    for batch_size in (1, 2, 1000):
        ProjectionRunner(store, [Notes()], batch_size=batch_size).rebuild()
        rows = dump(store, LAST, NOTES)
        assert rows["test_last"] == [
            {"conversation_id": c, "note": None, "events": 5} for c in ("c0", "c1")
        ]  # the last event (version 5) wrote NULL over version 4's note
        notes = sorted(rows["test_notes"], key=lambda r: int(r["position"]))
        assert [(r["version"], r["note"]) for r in notes] == [
            (v, f"v{v}" if v % 2 == 0 else None) for _ in range(2) for v in range(1, 6)
        ]
