"""Validation of OpenAI chat-format messages before they enter the log.

Messages are stored verbatim: validation only checks the fields model APIs
depend on and names the first offending field. Anything else a provider sends
(``refusal``, ``annotations``, ``reasoning_content``, ...) is kept untouched.
A tool call's ``arguments`` must be a string, but not necessarily valid JSON:
models sometimes produce broken JSON and the record must keep it as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chatledger.store.errors import ValidationError

__all__ = [
    "ASSISTANT_ID_PREFIX",
    "RESULT_ID_PREFIX",
    "ROLES",
    "check_reserved_id",
    "pending_tool_calls",
    "tool_calls_of",
    "validate_message",
]

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

RESULT_ID_PREFIX = "tool-result:"
"""Message ids ``tool-result:<call id>`` are the executor's: the result of that call, nothing else."""

ASSISTANT_ID_PREFIX = "assistant:"
"""Message ids ``assistant:<call id>`` are the executor's: the assistant turn whose first call that is."""


def validate_message(message: Any, where: str = "message") -> dict[str, Any]:
    """Check one chat message and return it (as a plain dict) unchanged.

    Raises:
        ValidationError: naming the field, e.g. ``messages[2].tool_calls[0].function.arguments``.
    """
    if type(message) is not dict and not isinstance(message, Mapping):
        raise ValidationError(where, f"must be an object, got {type(message).__name__}")
    msg = dict(message)
    for key in msg:
        if not isinstance(key, str):
            raise ValidationError(where, f"keys must be strings, got {key!r}")
    role = msg.get("role")
    if role not in ROLES:
        raise ValidationError(f"{where}.role", f"must be one of {sorted(ROLES)}, got {role!r}")
    content = msg.get("content")
    if content is not None and not isinstance(content, str | list):
        raise ValidationError(f"{where}.content", "must be a string, a list of parts or null")
    if isinstance(content, list):
        for i, part in enumerate(content):
            if not isinstance(part, Mapping | str):
                raise ValidationError(f"{where}.content[{i}]", "each part must be an object or a string")
    name = msg.get("name")
    if name is not None and not isinstance(name, str):
        raise ValidationError(f"{where}.name", "must be a string")
    if "tool_calls" in msg and msg["tool_calls"] is not None:
        if role != "assistant":
            raise ValidationError(f"{where}.tool_calls", f"only assistant messages carry tool_calls, not {role}")
        _validate_tool_calls(msg["tool_calls"], f"{where}.tool_calls")
    if role == "tool":
        call_id = msg.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise ValidationError(f"{where}.tool_call_id", "a tool message needs a non-empty string tool_call_id")
    return msg


def _validate_tool_calls(calls: Any, where: str) -> None:
    if not isinstance(calls, list):
        raise ValidationError(where, "must be a list of {id, type, function: {name, arguments}}")
    for i, call in enumerate(calls):
        at = f"{where}[{i}]"
        if not isinstance(call, Mapping):
            raise ValidationError(at, "must be an object {id, type, function: {name, arguments}}")
        if not isinstance(call.get("id"), str) or not call["id"]:
            raise ValidationError(f"{at}.id", "must be a non-empty string")
        if "type" in call and not isinstance(call["type"], str):
            raise ValidationError(f"{at}.type", "must be a string such as 'function'")
        fn = call.get("function")
        if not isinstance(fn, Mapping):
            raise ValidationError(f"{at}.function", "must be an object {name, arguments}")
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ValidationError(f"{at}.function.name", "must be a non-empty string")
        # Some providers omit "arguments" for a tool without parameters: kept as sent (absent).
        if "arguments" in fn and not isinstance(fn["arguments"], str):
            raise ValidationError(f"{at}.function.arguments", "must be a string (JSON text as the model produced it)")


def tool_calls_of(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The tool calls of an assistant message (an empty list for any other message)."""
    calls = message.get("tool_calls") if message.get("role") == "assistant" else None
    return list(calls) if isinstance(calls, list) else []


def pending_tool_calls(messages: list[dict[str, Any]]) -> list[str]:
    """The ids of assistant tool calls that no later tool message answers, in order.

    Ids may be reused within a conversation (recorded transcripts do), so each
    call is matched with the first tool result after it that names its id.
    """
    open_calls: list[str] = []
    for msg in messages:
        calls = msg.get("tool_calls")
        if calls and msg.get("role") == "assistant" and isinstance(calls, list):
            open_calls.extend(str(call.get("id")) for call in calls if isinstance(call, Mapping))
        elif open_calls and msg.get("role") == "tool":
            call_id = msg.get("tool_call_id")
            if call_id in open_calls:
                open_calls.remove(call_id)
    return open_calls


def check_reserved_id(message_id: str, message: Mapping[str, Any], where: str) -> None:
    """Refuse a client message under a reserved id it may not take.

    The executor records a call's result under ``tool-result:<call id>`` and the
    assistant turn that made it under ``assistant:<first call id>``. Each admits
    only that very message: a tool message answering the call (the adapters store
    the executor's result there too), an assistant message whose first tool call
    has that id. Anything else under them would stand in for the call's result or
    turn, or keep the real one from being recorded.

    Raises:
        ValidationError: naming ``where`` (the message id's field).
    """
    if message_id.startswith(RESULT_ID_PREFIX):
        call_id = message_id[len(RESULT_ID_PREFIX) :]
        if message.get("role") != "tool" or message.get("tool_call_id") != call_id:
            raise ValidationError(
                where,
                f"{message_id!r} is reserved for the result of tool call {call_id!r}: "
                "only a tool message with that tool_call_id may use it",
            )
    elif message_id.startswith(ASSISTANT_ID_PREFIX):
        call_id = message_id[len(ASSISTANT_ID_PREFIX) :]
        calls = message.get("tool_calls") if message.get("role") == "assistant" else None
        first = calls[0] if isinstance(calls, list) and calls else None
        if not isinstance(first, Mapping) or first.get("id") != call_id:
            raise ValidationError(
                where,
                f"{message_id!r} is reserved for the assistant turn whose first tool call is {call_id!r}: "
                "only that assistant message may use it",
            )
