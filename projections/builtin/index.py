"""The conversation index: one row per conversation, for listing and dashboards.

Each row holds the conversation's id, tenant, creation time, last activity,
version, message and tool-call counts, a status and its metadata. The fold is
pure; :class:`ProjectionRunner` materializes it (SQLite table
``conversation_index``, PostgreSQL table of the same name, or dicts).

Status: ``empty`` (no message yet), ``awaiting_tools`` (an assistant tool call
has no result yet), ``awaiting_reply`` (the last message is from the user or a
tool), ``answered`` (the last message is the assistant's).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from chatledger.projections.pages import Page
from chatledger.projections.runner import ProjectionRunner, read_models
from chatledger.projections.tables import Payload, Row, Table, Tables
from chatledger.store import ConversationStarted, Event, MessageAppended, Store, ValidationError
from chatledger.store.writer import FORBIDDEN_IN_IDS, check_count

__all__ = ["ConversationIndex", "IndexEntry", "conversation_index", "message_text"]

TABLE = Table(
    "conversation_index",
    {
        "conversation_id": "str",
        "tenant": "str",
        "created_at": "str",
        "last_activity": "str",
        "version": "int",
        "messages": "int",
        "tool_calls": "int",
        "open_tool_calls": "int",
        "status": "str",
        "title": "str",
        "metadata": "json",
        "forked_from": "json",
    },
    pk=("conversation_id",),
    indexes=(("tenant", "last_activity"), ("tenant", "status")),
)


def message_text(message: dict[str, Any]) -> str:
    """The searchable text of a chat message: its text content and parts, and its tool calls."""
    content = message.get("content")
    parts: list[str] = []
    if isinstance(content, str):
        parts.append(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
    for call in message.get("tool_calls") or ():
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            parts.append(f"{fn.get('name', '')} {fn.get('arguments', '')}")
    return "\n".join(filter(None, parts))


def _started_row(conversation_id: str, tenant: str, at: str, version: int, metadata: Any, forked_from: Any) -> Row:
    return {
        "conversation_id": conversation_id,
        "tenant": tenant,
        "created_at": at,
        "last_activity": at,
        "version": version,
        "messages": 0,
        "tool_calls": 0,
        "open_tool_calls": 0,
        "status": "empty",
        "title": None,
        "metadata": json.dumps(metadata, ensure_ascii=False),
        "forked_from": json.dumps(forked_from) if forked_from else None,
    }


def _count_message(row: Row, message: dict[str, Any]) -> None:
    """Fold one appended message into its conversation's row (shared by both paths)."""
    role = message.get("role")
    calls = len(message.get("tool_calls") or [])
    row["messages"] += 1
    if calls:
        row["tool_calls"] += calls
        row["open_tool_calls"] += calls
    if role == "tool":
        row["open_tool_calls"] = max(0, row["open_tool_calls"] - 1)
    if row["title"] is None and role == "user":
        row["title"] = message_text(message)[:80] or None
    if row["open_tool_calls"]:
        row["status"] = "awaiting_tools"
    elif role == "assistant":
        row["status"] = "answered"
    elif role in ("user", "tool"):
        row["status"] = "awaiting_reply"


_STATUS = {"assistant": "answered", "user": "awaiting_reply", "tool": "awaiting_reply"}  # with no open call
_STARTED = ConversationStarted.TYPE
_APPENDED = MessageAppended.TYPE


class ConversationIndex:
    """Folds conversation and message events into one ``conversation_index`` row per conversation."""

    name: ClassVar[str] = "conversations"
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[Table, ...]] = (TABLE,)
    types: ClassVar[frozenset[str] | None] = None
    payload_types: ClassVar[frozenset[str]] = frozenset({_STARTED, _APPENDED})

    def apply(self, tables: Tables, event: Event) -> None:
        """Start a row on ``conversation.started``; count messages and tool calls; track activity."""
        at = event.recorded_at.isoformat()
        if isinstance(event, ConversationStarted):
            row = _started_row(
                event.conversation_id, event.tenant, at, event.version, event.metadata, event.forked_from
            )
            tables.put(TABLE.name, row)
            return
        found = tables.get(TABLE.name, event.conversation_id)
        if found is None:
            return
        found["last_activity"] = at
        if event.stream_id == event.conversation_id:
            found["version"] = event.version
        if isinstance(event, MessageAppended):
            _count_message(found, event.message)
        tables.put(TABLE.name, found)

    def apply_batch(self, tables: Tables, page: Page, payloads: Sequence[Payload | None]) -> None:
        """The fast path: each conversation's row is loaded once and written once per batch.

        ``recorded_at`` is used as stored: it is what ``datetime.isoformat()`` wrote, so it
        equals the pure fold's ``event.recorded_at.isoformat()``.
        """
        rows: dict[str, Row | None] = {}
        get = tables.get
        current, row = "", None  # consecutive events mostly share a conversation
        for conv, stream, tenant, kind, version, at, payload in zip(
            page.conversation_id,
            page.stream_id,
            page.tenant,
            page.type,
            page.version,
            page.recorded_at,
            payloads,
            strict=True,
        ):
            if kind == _STARTED:
                current = conv
                if payload is None:  # an erased conversation: not indexed
                    row = rows[conv] = None
                    continue
                row = rows[conv] = _started_row(
                    conv, tenant, at, version, payload.get("metadata", {}), payload.get("forked_from")
                )
                continue
            if conv != current:
                current = conv
                row = rows[conv] if conv in rows else rows.setdefault(conv, get(TABLE.name, conv))
            if row is None:
                continue
            row["last_activity"] = at
            if stream == conv:
                row["version"] = version
            if payload is None or kind != _APPENDED:
                continue
            # _count_message inlined (a call per message cost ~0.15 s of a 1M-event rebuild).
            message = payload["message"]
            role = message.get("role")
            calls = message.get("tool_calls")
            row["messages"] += 1
            open_calls = row["open_tool_calls"]
            if calls:
                row["tool_calls"] += len(calls)
                open_calls += len(calls)
            if role == "tool" and open_calls:
                open_calls -= 1
            row["open_tool_calls"] = open_calls
            if role == "user" and row["title"] is None:
                row["title"] = message_text(message)[:80] or None
            if open_calls:
                row["status"] = "awaiting_tools"
            elif role in _STATUS:
                row["status"] = _STATUS[role]
        for found in rows.values():
            if found is not None:
                tables.put(TABLE.name, found)


@dataclass(frozen=True)
class IndexEntry:
    """One conversation in the index."""

    conversation_id: str
    tenant: str
    created_at: str
    last_activity: str
    version: int
    messages: int
    tool_calls: int
    status: str
    title: str | None
    metadata: dict[str, Any]


_ORDERS = ("last_activity", "created_at", "messages", "tool_calls", "conversation_id")


def conversation_index(
    store: Store,
    *,
    status: str | None = None,
    order_by: str = "last_activity",
    desc: bool = True,
    limit: int | None = None,
    catch_up: bool = True,
) -> list[IndexEntry]:
    """The store tenant's conversations from the index, newest activity first by default.

    Args:
        status: only conversations with this status.
        order_by: one of last_activity, created_at, messages, tool_calls, conversation_id.
        catch_up: bring the index up to date with the log first (read-your-writes).

    Raises:
        ValidationError: an unknown ``order_by``.
    """
    if not isinstance(order_by, str) or order_by not in _ORDERS:
        raise ValidationError("order_by", f"must be one of {', '.join(_ORDERS)}")
    if status is not None and (not isinstance(status, str) or FORBIDDEN_IN_IDS.search(status) is not None):
        raise ValidationError("status", "must be a status name such as 'answered'")
    check_count(limit, "limit")
    if catch_up:
        ProjectionRunner(store, [ConversationIndex()]).catch_up()
    where: dict[str, Any] = {"tenant": store.tenant}
    if status is not None:
        where["status"] = status
    rows = read_models(store).rows(TABLE, where, order_by, desc, limit)
    return [
        IndexEntry(
            r["conversation_id"],
            r["tenant"],
            r["created_at"],
            r["last_activity"],
            r["version"],
            r["messages"],
            r["tool_calls"],
            r["status"],
            r["title"],
            _json(r["metadata"]),
        )
        for r in rows
    ]


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    loaded = json.loads(value) if value else {}
    return loaded if isinstance(loaded, dict) else {}
