"""Where read models live: the backend seam of the projection runner, and the tracking row.

Every backend keeps, next to a projection's tables, one tracking row
(name, version, position, events, updated_at). A batch of the runner is one
transaction of the backend that (1) locks the tracking rows of the projections
it advances, (2) writes their table changes and (3) moves their position with
a compare-and-set on the position it started from.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from chatledger.projections.tables import Batch, Row, Table
from chatledger.store.writer import now_iso

__all__ = ["AdvancingBatch", "ProjectionState", "ReadModels", "now_iso"]


@dataclass(frozen=True)
class ProjectionState:
    """A projection's tracking row: the last log position it folded in and how many events it read."""

    name: str
    version: int
    position: int
    events: int
    updated_at: str


class AdvancingBatch(Batch, Protocol):
    """A batch that can also move its projections' position (inside the same transaction)."""

    def advance(self, position: int, events: int) -> None:
        """Move every projection of the batch to ``position``; ConcurrencyError if one moved already."""


class ReadModels(Protocol):
    """A backend's read-model store: tables, tracking rows, batches and queries."""

    def prepare(self, name: str, version: int, tables: Sequence[Table], *, reset: bool = False) -> bool:
        """Create a projection's tables and tracking row; drop and start over on reset or a new version."""

    def states(self) -> list[ProjectionState]:
        """Every projection's tracking row."""

    def batch(self, names: Sequence[str], expected: int) -> AbstractContextManager[AdvancingBatch | None]:
        """One transaction for projections all at ``expected`` (None when any of them is elsewhere)."""

    def rows(
        self,
        table: Table,
        where: dict[str, Any],
        order_by: str | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> list[Row]:
        """Rows matching ``column = value`` filters."""

    def search(self, table: Table, query: str, where: dict[str, Any], limit: int) -> list[Row]:
        """Full-text matches, best first, each with a ``snippet``."""

    def settle(self, tables: Sequence[Table]) -> None:
        """Finish derived indexes a bulk load deferred (called by the runner once it has caught up)."""

    def close(self) -> None:
        """Release connections this object opened."""
