"""Redacted arguments and calls held by another request: like is compared with like, live leases are kept."""

from __future__ import annotations

import threading
from collections.abc import Callable

from chatledger.store import Executor, Store, ToolRegistry
from chatledger.store.integrity.redaction import DefaultRedactor
from chatledger.store.tools.ledger import load_call

from .checks import assert_model_ready, assistant, call

SECRET = "sk-live0123456789abcdefghij"


def test_a_call_with_a_secret_in_its_arguments_runs_once_with_a_redactor(make_store: Callable[..., Store]) -> None:
    """With a redactor on, a call whose arguments hold a secret runs once, with the arguments the model
    gave, records its result, and a duplicate delivery gets the recorded result; the secret is not stored."""
    store = make_store(redactor=DefaultRedactor())
    seen: list[str] = []
    tools = ToolRegistry()

    @tools.register
    def login(token: str) -> str:
        seen.append(token)
        return "logged in"

    conv = store.start_conversation(messages=[{"role": "user", "content": "log in"}])
    message = assistant(call("s1", "login", {"token": f"api_key={SECRET}"}))
    first = Executor(store, tools).execute(conv, message)
    again = Executor(store, tools).execute(conv, message)
    Executor(store, tools).submit(conv, message)
    assert first == again == [{"role": "tool", "tool_call_id": "s1", "content": "logged in"}]
    assert seen == [f"api_key={SECRET}"]
    assert load_call(store, conv, "s1").status == "succeeded"  # type: ignore[union-attr]
    assert SECRET not in repr([e.model_dump() for e in store.read_all()])
    assert_model_ready(store.history(conv))


def test_closing_a_conversation_keeps_a_call_another_request_is_running(store: Store) -> None:
    """close_pending on a conversation whose call another request is running under a live lease does not
    mark it outcome-unknown: it waits for that call's real result and answers with it; the tool runs once."""
    started, release = threading.Event(), threading.Event()
    runs: list[int] = []
    tools = ToolRegistry()

    @tools.register
    def slow() -> str:
        runs.append(1)
        started.set()
        assert release.wait(60)
        return "finished"

    conv = store.start_conversation(messages=[{"role": "user", "content": "go"}])
    results: dict[str, object] = {}
    first = threading.Thread(
        target=lambda: results.update(first=Executor(store, tools).execute(conv, assistant(call("h1", "slow", {}))))
    )
    first.start()
    assert started.wait(60)
    closer = threading.Thread(target=lambda: results.update(closed=Executor(store, tools).close_pending(conv)))
    closer.start()
    closer.join(1.0)  # a closer that does not wait has answered by now
    release.set()
    first.join(60)
    closer.join(60)
    expected = [{"role": "tool", "tool_call_id": "h1", "content": "finished"}]
    assert results["first"] == expected
    assert results["closed"] == expected
    assert runs == [1]
    assert load_call(store, conv, "h1").status == "succeeded"  # type: ignore[union-attr]
    assert_model_ready(store.history(conv))
