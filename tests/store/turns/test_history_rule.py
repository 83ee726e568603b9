"""Store.history() hands out only histories the provider rule accepts (chatledger.store.validity)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from chatledger.adapters.openai_format import import_jsonl
from chatledger.store import InvalidHistoryError, PendingToolCallsError, Store, open_store
from chatledger.store.validity import is_provider_valid

from ...conftest import CORPUS
from ...store.test_validity import USER, call, result


def test_results_after_another_message_are_refused_naming_the_position(store: Store) -> None:
    """A stored history whose tool results come after another message (the old classic interleaving) raises
    InvalidHistoryError naming the message index and call id; the log is left as stored."""
    conv = store.start_conversation()
    stored = [USER, USER, call("a"), call("b"), result("a"), result("b"), {"role": "assistant", "content": "x"}]
    store.append(conv, stored)
    with pytest.raises(InvalidHistoryError) as caught:
        store.history(conv)
    first = caught.value.violations[0]
    assert (first.index, first.call_id) == (2, "a")
    assert "message 2" in str(caught.value) and "'a'" in str(caught.value)
    with pytest.raises(InvalidHistoryError):
        store.history(conv, allow_pending=True)  # a pending *tail* is allowed, a broken middle never
    assert store.messages(conv) == stored
    assert store.history(conv, as_of=3) == [USER, USER]  # as of a version before the break: valid


def test_a_pending_tail_is_reported_as_pending(store: Store) -> None:
    """A turn in progress (the last assistant's calls still unanswered) is PendingToolCallsError, or allowed."""
    conv = store.start_conversation()
    store.append(conv, [USER, call("a", "b"), result("a")])
    with pytest.raises(PendingToolCallsError) as caught:
        store.history(conv)
    assert caught.value.tool_call_ids == ["b"]
    assert store.history(conv, allow_pending=True) == [USER, call("a", "b"), result("a")]


def test_every_history_handed_out_from_the_corpus_obeys_the_rule(tmp_path: Any) -> None:
    """Each of the 404 corpus conversations comes out of history() valid (the 58 cassettes recorded ending in a
    tool call only with allow_pending, as a pending tail)."""
    store = open_store(f"sqlite:///{tmp_path / 'corpus.db'}")
    pending = total = 0
    for path in sorted(CORPUS.glob("*.jsonl")):
        text = path.read_text(encoding="utf-8")
        import_jsonl(store, io.StringIO(text))
        for line in text.splitlines():
            conv = json.loads(line)["id"]
            total += 1
            try:
                history = store.history(conv)
                assert is_provider_valid(history)
            except PendingToolCallsError:
                pending += 1
                assert is_provider_valid(store.history(conv, allow_pending=True), allow_pending_tail=True)
    assert (total, pending) == (404, 58)
    store.close()
