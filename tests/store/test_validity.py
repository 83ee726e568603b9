"""The provider rule: each assistant tool call answered once, immediately after it, before any other message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatledger.store import InvalidHistoryError
from chatledger.store.validity import check_provider_valid, is_provider_valid, provider_violations

from ..conftest import CORPUS


def call(*ids: str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": i, "type": "function", "function": {"name": "f", "arguments": "{}"}} for i in ids],
    }


def result(call_id: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": "ok"}


USER = {"role": "user", "content": "hi"}


def test_results_immediately_after_their_call_in_any_order_are_valid() -> None:
    """Parallel calls may be answered in any order, as long as nothing else comes between."""
    assert is_provider_valid([USER, call("a", "b"), result("b"), result("a"), {"role": "assistant", "content": "x"}])


def test_a_user_message_between_a_call_and_its_result_is_refused() -> None:
    """The interleaving concurrent classic requests stored is not valid, though every call has a result later."""
    history = [USER, USER, call("a"), call("b"), result("a"), result("b")]
    reasons = [str(v) for v in provider_violations(history)]
    assert reasons and any("'a'" in r for r in reasons)
    with pytest.raises(InvalidHistoryError, match="tool call 'a'"):
        check_provider_valid(history)


@pytest.mark.parametrize(
    "history",
    [
        [result("a"), USER],  # starts with a tool result
        [USER, call("a"), result("a"), result("a")],  # answered twice
        [USER, call("a", "a"), result("a")],  # one message names an id twice
        [USER, call("a"), result("b")],  # answers another call
    ],
)
def test_orphan_duplicate_and_foreign_results_are_refused(history: list[dict[str, Any]]) -> None:
    """Every shape a provider rejects is reported."""
    assert provider_violations(history)


def test_a_pending_tail_is_allowed_only_when_asked() -> None:
    """A turn in progress (last message calls tools with no results yet) is valid only with allow_pending_tail."""
    history = [USER, call("a")]
    assert not is_provider_valid(history)
    assert is_provider_valid(history, allow_pending_tail=True)
    assert not is_provider_valid([USER, call("a"), USER], allow_pending_tail=True)


def test_every_corpus_conversation_obeys_the_rule_or_ends_in_a_pending_call() -> None:
    """The 404 real conversations are valid; the 58 recorded cassettes that end in a tool call are pending tails."""
    pending_tails = total = 0
    for path in sorted(CORPUS.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            messages = json.loads(line)["messages"]
            total += 1
            assert is_provider_valid(messages, allow_pending_tail=True), path.name
            pending_tails += not is_provider_valid(messages)
    assert total == 404
    assert pending_tails == 58
