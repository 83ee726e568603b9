"""The chat-history projection: a conversation as OpenAI chat messages.

The history is a pure fold over a conversation's events: each
``message.appended`` contributes its message verbatim, in version order. Reads
go straight to the conversation's own events, so a history handed to an agent
reflects every append made before the read (read-your-writes); there is no
lagging read model in between.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from chatledger.store import Event, MessageAppended, Store
from chatledger.store.messages import pending_tool_calls

__all__ = ["chat_history", "fold_history", "history_from_events", "pending_tool_calls"]


def fold_history(state: list[dict[str, Any]], event: Event) -> list[dict[str, Any]]:
    """Fold one event into a history: messages are appended, every other event leaves it as it is."""
    if isinstance(event, MessageAppended):
        return [*state, event.message]
    return state


def chat_history(
    store: Store, conversation_id: str, as_of: int | None = None, *, allow_pending: bool = False
) -> list[dict[str, Any]]:
    """The conversation's chat history as of version ``as_of`` (the latest when None).

    Raises:
        PendingToolCallsError: a tool call has no result and ``allow_pending`` is False.
    """
    return store.history(conversation_id, as_of, allow_pending=allow_pending)


def history_from_events(events: Iterable[Event]) -> list[dict[str, Any]]:
    """Fold a sequence of events into a history (the reference the fast path is tested against)."""
    state: list[dict[str, Any]] = []
    for event in events:
        state = fold_history(state, event)
    return state
