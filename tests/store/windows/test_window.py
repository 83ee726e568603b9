"""History windows: within a budget, always provider-valid, a suffix of the history plus its head and summary."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatledger.store import PendingToolCallsError, Store, open_store
from chatledger.store.validity import is_provider_valid
from chatledger.store.window import estimate_tokens, heal, window

from ...conftest import CORPUS


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def answer(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def calls(*ids: str, arguments: str = '{"q": 1}') -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": i, "type": "function", "function": {"name": "f", "arguments": arguments}} for i in ids],
    }


def result(call_id: str, text: str = "ok") -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": text}


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Random valid histories: system head, user turns, parallel calls, failures, interruptions, long texts."""
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": "You are helpful."})
    n = 0
    for _ in range(draw(st.integers(1, 12))):
        messages.append(user("u" * draw(st.integers(1, 200))))
        for _ in range(draw(st.integers(0, 2))):
            width = draw(st.integers(1, 3))
            ids = [f"call_{n + i}" for i in range(width)]
            n += width
            messages.append(calls(*ids))
            order = draw(st.permutations(ids))
            for call_id in order:
                outcome = draw(st.sampled_from(["ok", "error: tool failed", "outcome unknown: interrupted"]))
                messages.append(result(call_id, outcome * draw(st.integers(1, 20))))
        messages.append(answer("a" * draw(st.integers(1, 300))))
    return messages


def store_with(messages: list[dict[str, Any]], url: str = "memory://") -> tuple[Store, str]:
    store = open_store(url)
    conv = store.start_conversation()
    store.append(conv, messages)
    return store, conv


def is_suffix_with_head(full: list[dict[str, Any]], shown: list[dict[str, Any]], head: int, summary: bool) -> bool:
    """``shown`` is the first ``head`` messages of ``full``, maybe a summary, then a suffix of ``full``."""
    if shown[:head] != full[:head]:
        return False
    tail = shown[head + (1 if summary else 0) :]
    return not tail or full[len(full) - len(tail) :] == tail


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations(), st.integers(5, 3000), st.one_of(st.none(), st.integers(1, 30)), st.booleans())
def test_every_window_is_provider_valid_and_a_suffix(
    messages: list[dict[str, Any]], max_tokens: int, max_messages: int | None, keep_first_user: bool
) -> None:
    """For every budget, a window obeys the provider rule and is the head plus a suffix of the history."""
    store, conv = store_with(messages)
    shown = window(store, conv, max_tokens=max_tokens, max_messages=max_messages, keep_first_user=keep_first_user)
    assert is_provider_valid(shown.messages)
    assert shown.messages[0]["role"] != "tool"
    assert is_suffix_with_head(messages, shown.messages, shown.head, summary=False)
    assert shown.messages[-1] == messages[-1]  # the newest message is always there
    unbounded = window(store, conv)
    assert unbounded.messages == messages


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations(), st.integers(1, 40), st.booleans(), st.integers(1, 8))
def test_every_message_bounded_window_is_valid_and_within_its_bound(
    messages: list[dict[str, Any]], max_messages: int, keep_first_user: bool, chunk: int
) -> None:
    """With a message bound alone, a window is valid, a suffix after its head, and within the bound beyond the
    newest unit, whatever the read chunk."""
    store, conv = store_with(messages)
    shown = window(store, conv, max_messages=max_messages, keep_first_user=keep_first_user, chunk=chunk)
    assert is_provider_valid(shown.messages)
    assert is_suffix_with_head(messages, shown.messages, shown.head, summary=False)
    assert shown.messages[-1] == messages[-1]
    newest_unit = 1
    while messages[-newest_unit]["role"] == "tool":
        newest_unit += 1
    assert len(shown.messages) <= max(max_messages, shown.head + newest_unit)
    if len(messages) <= max_messages:
        assert shown.messages == messages


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations(), st.integers(60, 1500))
def test_windows_with_summaries_are_valid_and_summarize_once(messages: list[dict[str, Any]], max_tokens: int) -> None:
    """A summarized window is valid; asking again (a later request, a replay) makes no new summarizer call."""
    store, conv = store_with(messages)
    asked: list[int] = []

    def summarizer(dropped: list[dict[str, Any]]) -> str:
        asked.append(len(dropped))
        return f"{len(dropped)} messages about weather"

    first = window(store, conv, max_tokens=max_tokens, summarizer=summarizer, summary_model="m")
    assert is_provider_valid(first.messages)
    assert is_suffix_with_head(messages, first.messages, first.head, summary=first.summary is not None)
    calls_after_first = len(asked)
    again = window(store, conv, max_tokens=max_tokens, summarizer=summarizer, summary_model="m")
    assert again.messages == first.messages and len(asked) == calls_after_first
    assert store.messages(conv) == messages  # summaries never replace the log


def test_a_summary_is_recorded_once_and_reused_by_later_requests_and_replay() -> None:
    """The summary is an event: later windows and a replay as of an earlier version reuse it without a model call."""
    history = [{"role": "system", "content": "sys"}] + [
        m for i in range(40) for m in (user(f"q{i} " * 30), answer(f"a{i} " * 30))
    ]
    store, conv = store_with(history)
    asked: list[list[dict[str, Any]]] = []

    def summarizer(dropped: list[dict[str, Any]]) -> str:
        asked.append(dropped)
        return "they talked about weather"

    shown = window(store, conv, max_tokens=600, summarizer=summarizer, summary_model="gpt-x")
    assert len(asked) == 1 and shown.summary is not None
    assert shown.summary["model"] == "gpt-x" and shown.summary["covers"][0] == 3  # after the system message
    assert shown.messages[1] == {
        "role": "system",
        "content": "Summary of the earlier conversation:\nthey talked about weather",
    }
    as_of = store.version(conv)
    store.append(conv, [user("one more"), answer("ok")])
    later = window(store, conv, max_tokens=600, summarizer=summarizer)
    assert len(asked) == 1 and later.summary == shown.summary  # room was left to grow: no new summary
    replayed = window(store, conv, max_tokens=600, summarizer=summarizer, as_of=as_of)
    assert len(asked) == 1 and replayed.messages == shown.messages


def test_two_writers_summarizing_at_once_keep_the_first_summary(tmp_path: Any) -> None:
    """Two processes' requests that summarize at the same moment record one summary (first writer wins) and
    both send that one."""
    import threading

    url = f"sqlite:///{tmp_path / 'w.db'}"
    history = [m for i in range(30) for m in (user(f"q{i} " * 30), answer(f"a{i} " * 30))]
    store, conv = store_with(history, url)
    second = open_store(url)
    both_asked = threading.Barrier(2)
    results: dict[str, Any] = {}

    def run(name: str, handle: Store) -> None:
        def summarizer(dropped: list[dict[str, Any]]) -> str:
            both_asked.wait(timeout=30)  # neither has recorded yet: a real race
            return f"summary by {name}"

        results[name] = window(handle, conv, max_tokens=500, summarizer=summarizer)

    threads = [threading.Thread(target=run, args=(n, h)) for n, h in (("one", store), ("two", second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    one, two = results["one"], results["two"]
    assert one.summary == two.summary and one.summary is not None
    assert one.messages == two.messages
    assert one.summary["summary"] in {"summary by one", "summary by two"}
    store.close()
    second.close()


def test_a_pending_tail_raises_unless_allowed() -> None:
    """Like history(), a window whose newest tool calls have no results is refused unless asked for."""
    store, conv = store_with([user("hi"), calls("c1")])
    with pytest.raises(PendingToolCallsError):
        window(store, conv, max_tokens=100)
    assert window(store, conv, max_tokens=100, allow_pending=True).messages[-1]["tool_calls"]


def test_a_call_cut_mid_json_is_healed_on_the_way_out_only() -> None:
    """Arguments that are not JSON are sent as a JSON object; the stored event keeps what the model produced."""
    broken = calls("c1", arguments='{"city": "Ro')
    store, conv = store_with([user("hi"), broken, result("c1", "error: arguments are not valid JSON"), answer("sorry")])
    shown = window(store, conv, max_tokens=1000)
    args = shown.messages[1]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(args) == {"invalid_json_arguments": '{"city": "Ro'}
    assert store.messages(conv)[1] == broken
    assert heal(answer("x")) == answer("x")


def test_the_newest_unit_is_kept_even_over_budget() -> None:
    """A model call without the newest message is useless: it stays, and the window says what it costs."""
    store, conv = store_with([user("a"), answer("b"), user("x" * 4000)])
    shown = window(store, conv, max_tokens=10)
    assert shown.messages == [user("x" * 4000)]
    assert shown.tokens == estimate_tokens(user("x" * 4000)) > 10


def test_parallel_calls_stay_with_all_their_results() -> None:
    """A window never keeps some results of a parallel call without the call and the others."""
    history = [user("go"), calls("a", "b", "c"), result("b"), result("a"), result("c"), answer("done")]
    store, conv = store_with(history)
    for budget in range(1, 400, 7):
        shown = window(store, conv, max_tokens=budget)
        assert is_provider_valid(shown.messages)
        assert shown.messages in (history[-1:], history[1:], history)


@pytest.mark.parametrize("budget", [200, 1000, 4000])
def test_every_corpus_conversation_windows_valid(budget: int) -> None:
    """The 404 real conversations, windowed at several budgets, are all provider-valid."""
    store = open_store("memory://")
    total = 0
    for path in sorted(CORPUS.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            messages = json.loads(line)["messages"]
            conv = store.start_conversation()
            store.append(conv, messages)
            pending = not is_provider_valid(messages)
            shown = window(store, conv, max_tokens=budget, keep_first_user=True, allow_pending=pending)
            assert is_provider_valid(shown.messages, allow_pending_tail=pending), path.name
            total += 1
    assert total == 404


def test_a_window_reads_from_the_tail(make_store: Callable[..., Store]) -> None:
    """On every backend, a small window of a long conversation holds only the newest messages."""
    store = make_store()
    conv = store.start_conversation()
    for i in range(30):
        store.append(conv, [user(f"q{i}"), answer(f"a{i}")])
    shown = window(store, conv, max_messages=4, chunk=2)
    assert shown.messages == [user("q28"), answer("a28"), user("q29"), answer("a29")]
    assert shown.first_version == store.version(conv) - 3


def test_another_tenants_conversation_has_no_window(make_store: Callable[..., Store]) -> None:
    """A window is read only for the store's own tenant: another tenant's id is NotFoundError, like a missing one."""
    from chatledger.store import NotFoundError

    mine, theirs = make_store("a"), make_store("b")
    conv = mine.start_conversation()
    mine.append(conv, [user("secret plans")])
    with pytest.raises(NotFoundError):
        window(theirs, conv, max_messages=5)
    with pytest.raises(NotFoundError):
        window(theirs, "no-such-conversation", max_messages=5)
    assert window(mine, conv, max_messages=5).messages == [user("secret plans")]
