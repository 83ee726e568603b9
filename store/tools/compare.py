"""Call comparison: whether a request is the call the ledger recorded, compared like with like.

The ledger holds a call's arguments as they were *stored*: with a redactor on,
that is the redacted text. A request arrives with the arguments the model
produced. Comparing the two directly would call every call with a secret in its
arguments a conflict, so the request's side is put in its stored form first
(:func:`as_recorded`), and the texts are compared as text or as JSON (adapters
re-serialize arguments).
"""

from __future__ import annotations

import json

from chatledger.store.errors import ConflictError
from chatledger.store.handle import Store

__all__ = ["as_recorded", "check_same", "same_call"]


def as_recorded(store: Store, tool_call_id: str, name: str, arguments: str) -> str:
    """The arguments as the ledger stores them: redacted the way the store redacts a request."""
    if store.redactor is None:
        return arguments
    redacted = store.redactor.redact({"tool_call_id": tool_call_id, "name": name, "arguments": arguments})
    return str(redacted["arguments"])


def same_call(name: str, arguments: str, other_name: str, other_arguments: str) -> bool:
    """Whether two requests are the same call: same tool, and arguments equal as text or as JSON.

    Adapters may re-serialize the arguments a model produced (AutoGen parses them, then
    dumps them with sorted keys), so ``{"a": 1, "b": 2}`` and ``{"b":2,"a":1}`` are one call.
    Arguments too deeply nested to parse are compared as text only.
    """
    if name != other_name:
        return False
    if arguments == other_arguments:
        return True
    try:
        return bool(json.loads(arguments) == json.loads(other_arguments))
    except (ValueError, TypeError, RecursionError):
        return False


def check_same(
    store: Store, conversation_id: str, recorded_name: str, recorded_arguments: str, request: tuple[str, str, str]
) -> None:
    """Raise ConflictError unless ``request`` (id, name, arguments) is the recorded call.

    Raises:
        ConflictError: the call id was recorded with a different tool or arguments.
    """
    call_id, name, arguments = request
    if same_call(recorded_name, recorded_arguments, name, arguments):
        return
    stored = as_recorded(store, call_id, name, arguments)
    if stored != arguments and same_call(recorded_name, recorded_arguments, name, stored):
        return
    raise ConflictError(
        f"tool call {call_id!r} in conversation {conversation_id!r} was recorded as "
        f"{recorded_name}({recorded_arguments}), not {name}({stored})"
    )
