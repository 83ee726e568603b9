"""A fork point inside a tool-call turn carries the turn's recorded results (store.fork)."""

from __future__ import annotations

from typing import Any

from chatledger.store import Executor, Store, fork
from chatledger.store.validity import is_provider_valid

USER = {"role": "user", "content": "weather in Rome and Paris?"}


def calls(*ids: str) -> dict[str, Any]:
    """An assistant message calling ``weather`` once per id."""
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": i, "type": "function", "function": {"name": "weather", "arguments": f'{{"city": "{i}"}}'}}
            for i in ids
        ],
    }


def run_turn(store: Store, runs: list[str]) -> str:
    """A conversation with one two-call turn run by the executor, then an answer."""
    conv = store.start_conversation()
    store.append(conv, [USER])
    message = calls("rome", "paris")
    store.append(conv, [message])

    def weather(city: str) -> str:
        runs.append(city)
        return f"sunny in {city}"

    Executor(store, {"weather": weather}).execute(conv, message)
    store.append(conv, [{"role": "assistant", "content": "Sunny in both."}])
    return conv


def test_a_fork_between_a_call_and_its_results_carries_the_results(store: Store) -> None:
    """Forking at the assistant tool-call message (or between its results) gives a provider-valid history
    holding the recorded results; the calls are not run again in the fork."""
    runs: list[str] = []
    conv = run_turn(store, runs)
    at_call = 3  # started, user, assistant+calls
    for at in (at_call, at_call + 1):
        forked = fork(store, conv, at)
        history = store.history(forked)
        assert is_provider_valid(history)
        assert history == store.messages(conv)[:4]
        assert store.events(forked)[0].forked_from == {  # type: ignore[attr-defined]
            "conversation_id": conv,
            "version": at,
            "carried_to": at_call + 2,
        }
        outcome = Executor(store, {"weather": lambda city: "rain"}).execute_call(
            forked, "paris", "weather", '{"city": "paris"}'
        )
        assert outcome.from_record and outcome.content == "sunny in paris"
    assert sorted(runs) == ["paris", "rome"]


def test_a_fork_outside_a_turn_is_taken_as_asked(store: Store) -> None:
    """A fork point after a turn's results, or before its call, carries nothing."""
    conv = run_turn(store, [])
    for at in (2, 5, 6):
        forked = fork(store, conv, at)
        assert store.messages(forked) == store.messages(conv, as_of=at)
        assert "carried_to" not in store.events(forked)[0].forked_from  # type: ignore[attr-defined]
