"""Forking: a new conversation from a position of another, without re-running its tools.

The fork holds the source's messages up to ``at_version`` (with their message
ids and adapter metadata) and a copy of the recorded outcome of every tool call
answered within that range, so an executor asked for one of those calls in the
fork returns the recorded outcome instead of running the tool. Its
``conversation.started`` event names the source and the version it was taken at.

**A fork point inside a tool-call turn carries the turn's recorded results.** When
``at_version`` falls between an assistant message with tool calls and its results,
the fork also takes the source's tool messages that immediately follow and answer
those calls (``forked_from["carried_to"]`` names the last version taken), so the
fork's history obeys the provider rule and those calls are never run again. A call
the source has no result for stays open in the fork, as in the source.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from chatledger.store.backends.recorder import call_stream_id
from chatledger.store.errors import ConflictError, ValidationError
from chatledger.store.events import (
    ConversationStarted,
    MessageAppended,
    ToolCallFailed,
    ToolCallOutcomeUnknown,
    ToolCallRequested,
    ToolCallSucceeded,
)
from chatledger.store.handle import Store
from chatledger.store.tools.ledger import OUTCOME_KEY
from chatledger.store.writer import Draft, check_id

__all__ = ["fork"]

_FINAL = {
    ToolCallSucceeded: "succeeded",
    ToolCallFailed: "failed",
    ToolCallOutcomeUnknown: "outcome_unknown",
}


def fork(
    store: Store,
    conversation_id: str,
    at_version: int | None = None,
    *,
    new_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Create a conversation holding ``conversation_id`` as of ``at_version``; return its id.

    Args:
        at_version: the last version of the source to include (default: its current version).
        new_id: the fork's id (default: a new UUID).
        metadata: the fork's metadata (default: the source's).

    Raises:
        NotFoundError: the source does not exist for this tenant.
        ValidationError: ``at_version`` is outside the source's versions.
        ConflictError: ``new_id`` exists already.
    """
    info = store.conversation(conversation_id)
    version = info.version if at_version is None else at_version
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= info.version:
        got = at_version if isinstance(at_version, int) else type(at_version).__name__
        raise ValidationError("at_version", f"must be between 1 and {info.version}, got {got}")
    target = uuid.uuid4().hex if new_id is None else check_id(new_id, "new_id")
    meta, meta_text = store.metadata_text(info.metadata if metadata is None else metadata, "metadata")
    events = store.events(conversation_id, 0, version)
    drafts: list[Draft] = [
        Draft(
            ConversationStarted,
            {"metadata": meta, "forked_from": {"conversation_id": conversation_id, "version": version}},
        )
    ]
    carried = _carried_results(store, conversation_id, events, version)
    if carried:
        drafts[0].payload["forked_from"]["carried_to"] = carried[-1].version
    answered: list[str] = []
    for event in [*events, *carried]:
        if isinstance(event, MessageAppended):
            payload: dict[str, Any] = {"message_id": event.message_id, "message": event.message}
            if event.meta is not None:
                payload["meta"] = event.meta
            drafts.append(Draft(MessageAppended, payload, key=event.message_id))
            if event.message.get("role") == "tool" and isinstance(event.message.get("tool_call_id"), str):
                answered.append(event.message["tool_call_id"])
    calls = []
    for call_id in dict.fromkeys(answered):
        stream = store.stream_events(call_stream_id(conversation_id, call_id))
        requested = next((e for e in stream if isinstance(e, ToolCallRequested)), None)
        final = next((e for e in stream if type(e) in _FINAL and getattr(e, "final", True)), None)
        if requested is not None and final is not None:
            calls.append((call_id, requested, final))
    with store.transaction() as w:
        if w.head(target) is not None:
            raise ConflictError(f"conversation {target!r} exists already")
        w.create_stream(target, target, "conversation", metadata=meta_text)
        w.append(target, drafts)
        for call_id, requested, final in calls:
            status = _FINAL[type(final)]
            stream_id = call_stream_id(target, call_id)
            w.create_stream(stream_id, target, "tool_call", status=status)
            w.append(
                stream_id,
                [
                    Draft(ToolCallRequested, requested.payload(), key="requested"),
                    Draft(type(final), final.payload(), key=OUTCOME_KEY),
                ],
                status=status,
                lease_until=None,
            )
    return target


def _carried_results(store: Store, conversation_id: str, events: list[Any], version: int) -> list[MessageAppended]:
    """The source's tool messages right after ``version`` that answer calls still open at it."""
    open_calls: set[str] = set()
    for event in events:
        if not isinstance(event, MessageAppended):
            continue
        message = event.message
        if message.get("role") == "tool":
            open_calls.discard(str(message.get("tool_call_id")))
        else:
            calls = message.get("tool_calls") if message.get("role") == "assistant" else None
            open_calls = (
                {str(c.get("id")) for c in calls if isinstance(c, Mapping)} if isinstance(calls, list) else set()
            )
    carried: list[MessageAppended] = []
    if not open_calls:
        return carried
    for event in store.events(conversation_id, version):
        if not isinstance(event, MessageAppended):
            continue
        call_id = event.message.get("tool_call_id")
        if event.message.get("role") != "tool" or call_id not in open_calls:
            break
        open_calls.discard(str(call_id))
        carried.append(event)
        if not open_calls:
            break
    return carried
