"""Intake: turning a final assistant message into requested tool calls in the ledger.

Only final assembled assistant messages execute; streaming chunks are refused.
A message's calls are recorded as requested, idempotently, together with the
assistant message itself (unless the conversation holds it already), in one
transaction, so the tool results that follow always have their call before them.
A call the model produced in any shape (no ``arguments``, arguments nested too
deeply to parse, an unknown tool) is still recorded: it fails when it is run,
and the model is told why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chatledger.store.backends.recorder import call_stream_id
from chatledger.store.errors import ConflictError, PendingToolCallsError, ValidationError
from chatledger.store.events import MessageAppended, ToolCallRequested
from chatledger.store.handle import Store
from chatledger.store.messages import ASSISTANT_ID_PREFIX, pending_tool_calls, validate_message
from chatledger.store.tools.compare import check_same
from chatledger.store.tools.ledger import open_call
from chatledger.store.tools.registry import ToolRegistry
from chatledger.store.writer import Draft, check_id

__all__ = ["assistant_message_id", "call_exists", "final_tool_calls", "intake"]

_CHUNK_KEYS = ("delta", "choices")
_CREATE_RETRIES = 5
_PARTIAL_FLAGS = ("partial", "is_partial", "streaming")

CallRequest = tuple[str, str, str]
"""One tool call as requested: ``(tool_call_id, name, arguments)``."""


def final_tool_calls(message: Any, where: str = "assistant_message") -> list[CallRequest]:
    """The ``(id, name, arguments)`` of a final assembled assistant message's tool calls.

    Streaming deltas are refused: a message carrying ``delta``/``choices``, an
    ``object`` of ``*.chunk``, a truthy ``partial`` flag, or a tool call still
    being assembled (an ``index`` with empty ``arguments``) never executes. A call
    without ``arguments`` (some providers omit them for a tool without parameters)
    has empty arguments.

    Raises:
        ValidationError: the message is not a final assistant message, or repeats a call id.
    """
    if isinstance(message, Mapping):
        if any(k in message for k in _CHUNK_KEYS) or str(message.get("object", "")).endswith("chunk"):
            raise ValidationError(where, "is a streaming chunk; only the final assembled message executes")
        if any(message.get(flag) for flag in _PARTIAL_FLAGS):
            raise ValidationError(where, "is marked partial; only the final assembled message executes")
    msg = validate_message(message, where)
    if msg.get("role") != "assistant":
        raise ValidationError(f"{where}.role", f"must be 'assistant', got {msg.get('role')!r}")
    calls = msg.get("tool_calls") or []
    out: list[CallRequest] = []
    seen: set[str] = set()
    for i, call in enumerate(calls):
        call_id = check_id(call["id"], f"{where}.tool_calls[{i}].id")
        fn = call["function"]
        arguments = fn.get("arguments", "")
        if "index" in call and arguments == "":
            raise ValidationError(f"{where}.tool_calls[{i}]", "is a streaming fragment (index, no arguments yet)")
        if call_id in seen:
            raise ValidationError(f"{where}.tool_calls[{i}].id", f"{call_id!r} appears twice")
        seen.add(call_id)
        out.append((call_id, fn["name"], arguments))
    return out


def assistant_message_id(first_call_id: str) -> str:
    """The message id the executor stores an assistant message under: its first call's."""
    return f"{ASSISTANT_ID_PREFIX}{first_call_id}"


def call_exists(store: Store, conversation_id: str, tool_call_id: str) -> bool:
    """Whether the call has a stream in the ledger (it was requested)."""
    return store.recorder.get_head(call_stream_id(conversation_id, tool_call_id)) is not None


def intake(
    store: Store, registry: ToolRegistry, conv: str, message: Mapping[str, Any], calls: list[CallRequest]
) -> list[ToolCallRequested]:
    """Record ``calls`` (of ``message``) as requested, with the message, in one transaction.

    Raises:
        ConflictError: a call id was already requested with a different name or arguments.
        PendingToolCallsError: the message is new and earlier tool calls still lack results.
        NotFoundError: the conversation does not exist for this tenant.
    """
    # Where a missing head takes no lock (PostgreSQL), two intakes may both create a call's
    # stream; the loser gets ConflictError and, on the next try, finds the winner's record.
    for attempt in range(_CREATE_RETRIES):
        try:
            return _intake_once(store, registry, conv, message, calls)
        except ConflictError:
            if attempt == _CREATE_RETRIES - 1 or not any(call_exists(store, conv, c[0]) for c in calls):
                raise
    raise AssertionError("unreachable")


def _intake_once(
    store: Store, registry: ToolRegistry, conv: str, message: Mapping[str, Any], calls: list[CallRequest]
) -> list[ToolCallRequested]:
    mid = assistant_message_id(calls[0][0])
    messages = store.messages(conv)
    present = any(
        m.get("role") == "assistant" and any(c.get("id") == calls[0][0] for c in m.get("tool_calls") or [])
        for m in messages
    )
    if not present:
        # A new assistant turn after unanswered calls would hand models an invalid history.
        waiting = pending_tool_calls(messages)
        if waiting:
            raise PendingToolCallsError(conv, waiting)
    events: list[ToolCallRequested] = []
    with store.transaction() as w:
        if not present:
            payload = {"message_id": mid, "message": dict(message)}
            w.append(conv, [Draft(MessageAppended, payload, key=mid)])
        for request in calls:
            call_id, name, arguments = request
            if w.head(call_stream_id(conv, call_id)) is None:
                tool = registry.get(name)
                idempotent = tool.idempotent if tool is not None else False
                events.append(open_call(w, conv, call_id, name, arguments, idempotent=idempotent, message_id=mid))
                continue
            first = store.stream_events(call_stream_id(conv, call_id), 0, 1)[0]
            assert isinstance(first, ToolCallRequested)
            check_same(store, conv, first.name, first.arguments, request)
            events.append(first)
    return events
