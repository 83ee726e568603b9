"""The provider rule for chat histories, the one every history chatledger hands out obeys.

Model APIs (OpenAI's chat completions, and every provider that copies it) accept a
history only when each assistant message with ``tool_calls`` is followed
*immediately* by one tool message per call id, in any order, before any other
message; a tool message answers a call of the assistant message just before its
block, and answers it once. A result "somewhere later" is not enough: a user
message between a call and its result is refused ("tool_call_ids did not have
response messages").

This module only judges; it never changes a history. Readers (``Store.history``,
windows, adapters) call :func:`check_provider_valid` on what they are about to hand
out, and tests check every history against :func:`provider_violations`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chatledger.store.errors import InvalidHistoryError

__all__ = ["Violation", "check_provider_valid", "is_provider_valid", "provider_violations"]


@dataclass(frozen=True)
class Violation:
    """One place where a history breaks the provider rule."""

    index: int
    """Position of the offending message in the history (0-based)."""
    reason: str
    call_id: str | None = None

    def __str__(self) -> str:
        call = f" (tool call {self.call_id!r})" if self.call_id is not None else ""
        return f"message {self.index}{call}: {self.reason}"


def _call_ids(message: Mapping[str, Any]) -> list[str]:
    calls = message.get("tool_calls") if message.get("role") == "assistant" else None
    if not isinstance(calls, list):
        return []
    return [str(call.get("id")) if isinstance(call, Mapping) else "" for call in calls]


def provider_violations(messages: Sequence[Mapping[str, Any]], *, allow_pending_tail: bool = False) -> list[Violation]:
    """Every place ``messages`` break the provider rule, in order (empty when it is valid).

    With ``allow_pending_tail``, calls of the *last* assistant message that have no result
    yet are not violations: the history is a turn in progress (its results are still to
    come), which is what a recorded model response ending in tool calls looks like.
    """
    found: list[Violation] = []
    open_calls: list[str] = []  # calls of the current assistant block still waiting for a result
    open_at = -1
    answered: set[str] = set()
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role == "tool":
            call_id = msg.get("tool_call_id")
            cid = str(call_id) if call_id is not None else None
            if cid is not None and cid in open_calls:
                open_calls.remove(cid)
                answered.add(cid)
            elif cid is not None and cid in answered:
                found.append(Violation(i, "a second result for a call already answered", cid))
            else:
                found.append(Violation(i, "a tool result that answers no call of the assistant message before it", cid))
            continue
        for cid in open_calls:
            found.append(Violation(open_at, f"no result before the next {role} message (message {i})", cid))
        open_calls, open_at, answered = [], -1, set()
        ids = _call_ids(msg)
        if ids:
            if len(set(ids)) != len(ids):
                dup = next(c for c in ids if ids.count(c) > 1)
                found.append(Violation(i, "one assistant message names the same call id twice", dup))
            open_calls = list(dict.fromkeys(ids))
            open_at = i
    if not allow_pending_tail:
        for cid in open_calls:
            found.append(Violation(open_at, "no result: the history ends before it", cid))
    return found


def is_provider_valid(messages: Sequence[Mapping[str, Any]], *, allow_pending_tail: bool = False) -> bool:
    """True when a model API would accept ``messages`` as a history."""
    return not provider_violations(messages, allow_pending_tail=allow_pending_tail)


def check_provider_valid(
    messages: Sequence[Mapping[str, Any]], where: str = "history", *, allow_pending_tail: bool = False
) -> None:
    """Raise unless ``messages`` obey the provider rule.

    Raises:
        InvalidHistoryError: naming each violation (message index, call id, reason).
    """
    found = provider_violations(messages, allow_pending_tail=allow_pending_tail)
    if found:
        raise InvalidHistoryError(where, found)
