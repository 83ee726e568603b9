"""Full-text search over message contents.

The ``search`` projection keeps one row per chat message (its conversation,
version, role, author name and searchable text, see
:func:`~chatledger.projections.index.message_text`) and the backend indexes it:
SQLite FTS5 via sqlite-utils ``enable_fts`` (porter stemming over unicode61 with
diacritics folded), PostgreSQL ``to_tsvector`` / ``websearch_to_tsquery``, a
case-insensitive substring match on the in-memory backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from chatledger.store import Event, MessageAppended, Store, ValidationError

from .index import message_text
from .runner import ProjectionRunner, read_models, register_projection
from .tables import Table, Tables

__all__ = ["MessageSearch", "SearchHit", "search"]

TABLE = Table(
    "message_search",
    {
        "conversation_id": "str",
        "version": "int",
        "position": "int",
        "tenant": "str",
        "role": "str",
        "name": "str",
        "content": "str",
    },
    pk=("conversation_id", "version"),
    fts="content",
    indexes=(("tenant",),),
)


class MessageSearch:
    """Folds each ``message.appended`` into one searchable ``message_search`` row."""

    name: ClassVar[str] = "search"
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[Table, ...]] = (TABLE,)
    types: ClassVar[frozenset[str] | None] = frozenset({MessageAppended.TYPE})

    def apply(self, tables: Tables, event: Event) -> None:
        """Add a row for a message that has any text; other events change nothing."""
        if not isinstance(event, MessageAppended):
            return
        text = message_text(event.message)
        if not text:
            return
        name = event.message.get("name")
        tables.insert(
            TABLE.name,
            {
                "conversation_id": event.conversation_id,
                "version": event.version,
                "position": event.position,
                "tenant": event.tenant,
                "role": str(event.message.get("role")),
                "name": name if isinstance(name, str) else None,
                "content": text,
            },
        )


@dataclass(frozen=True)
class SearchHit:
    """A message that matches a query: where it is, who wrote it, and the matching passage."""

    conversation_id: str
    version: int
    role: str
    snippet: str


def search(store: Store, query: str, *, limit: int = 20, catch_up: bool = True) -> list[SearchHit]:
    """Messages of the store's tenant matching ``query``, best first.

    Args:
        query: words to find (all must occur); quotes and operators are taken literally on SQLite.
        limit: at most this many hits.
        catch_up: bring the search index up to date with the log first (read-your-writes).

    Raises:
        ValidationError: an empty query or a limit below 1.
    """
    if not isinstance(query, str) or not query.strip():
        raise ValidationError("query", "must be a non-empty string")
    if limit < 1:
        raise ValidationError("limit", "must be at least 1")
    if catch_up:
        ProjectionRunner(store, [MessageSearch()]).catch_up()
    rows = read_models(store).search(TABLE, query, {"tenant": store.tenant}, limit)
    return [SearchHit(r["conversation_id"], r["version"], r["role"], r["snippet"]) for r in rows]


register_projection(MessageSearch.name, MessageSearch)
