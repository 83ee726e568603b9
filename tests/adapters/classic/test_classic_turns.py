"""Classic AutoGen turns under concurrency: whatever requests run at once, the stored history stays provider-valid."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatledger.adapters.classic import chatledger_group_chat, chatledger_pair
from chatledger.store import ConversationBusy, Store, TurnGate, current_idempotency_key
from chatledger.store.validity import provider_violations

from .fakes import LLM_CONFIG, ScriptedModelClient, model_calls, runs, weather_tool

pytest.importorskip("autogen")

CITIES = ["Rome", "Oslo", "Lima"]


def ask(
    store: Store,
    conv: str,
    prompt: str,
    tmp_path: Path,
    request_id: str | None = None,
    wait_seconds: float | None = None,
    **model: Any,
) -> str:
    """One request of the recipe: fresh agents, one chat, the summary."""
    model.setdefault("calls_file", str(tmp_path / "calls"))
    assistant, user = chatledger_pair(
        store,
        conv,
        llm_config=LLM_CONFIG,
        tools=[weather_tool(tmp_path / "effects")],
        model_client=ScriptedModelClient,
        model_client_kwargs=model,
        request_id=request_id,
        **({} if wait_seconds is None else {"wait_seconds": wait_seconds}),
    )
    return str(user.initiate_chat(assistant, message=prompt, clear_history=False, silent=True).summary)


def concurrently(request: Callable[[str], str], cities: list[str]) -> dict[str, str]:
    """Run ``request(city)`` for every city in its own thread; each answer, or the error it raised."""
    answers: dict[str, str] = {}

    def worker(city: str) -> None:
        try:
            answers[city] = request(city)
        except Exception as exc:
            answers[city] = f"error: {type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=worker, args=(city,)) for city in cities]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return answers


def at_once(store: Store, conv: str, tmp_path: Path, cities: list[str], request_ids: bool = False) -> dict[str, str]:
    """Run one request per city on ``conv`` in threads that all reach the model before any goes on."""
    meet = (str(tmp_path / "meet"), len(cities), 0.5)

    def request(city: str) -> str:
        own = {"request_id": f"req-{city}"} if request_ids else {}
        return ask(store, conv, f"Weather in {city}?", tmp_path, meet=meet, **own)

    return concurrently(request, cities)


@pytest.mark.parametrize("request_ids", [False, True], ids=["default-ids", "own-ids"])
def test_simultaneous_requests_on_one_conversation_store_a_provider_valid_history(
    store: Store, tmp_path: Path, request_ids: bool
) -> None:
    """Requests running at once on one conversation leave a history the provider accepts; each tool call runs once.

    With or without request ids of their own: different prompts are different requests.
    """
    answers = at_once(store, "c1", tmp_path, CITIES, request_ids)
    assert answers == {city: f"Forecast: sunny in {city}" for city in CITIES}
    stored = store.messages("c1")
    assert provider_violations(stored) == []
    assert sorted(runs(tmp_path / "effects")) == sorted(CITIES)
    calls = [c["id"] for m in stored for c in m.get("tool_calls") or []]
    results = [m["tool_call_id"] for m in stored if m["role"] == "tool"]
    assert len(calls) == len(CITIES) and sorted(results) == sorted(calls)
    assert model_calls(tmp_path / "calls") == 2 * len(CITIES)
    assert ask(store, "c1", "And Paris?", tmp_path) == "Forecast: sunny in Paris"
    assert provider_violations(store.messages("c1")) == []
    assert model_calls(tmp_path / "calls") == 2 * len(CITIES) + 2


def legacy_interleaved(store: Store, conv: str) -> list[dict[str, Any]]:
    """Store what an older version stored for three simultaneous requests: each send on its own, interleaved."""
    store.start_conversation(conv)
    rows: list[tuple[dict[str, Any], str, int, str]] = []
    for phase in range(4):
        for city in CITIES:
            req, cid = f"at1-{city}", f"call_{city}"
            message: dict[str, Any] = [
                {"role": "user", "content": f"Weather in {city}?", "name": "user"},
                {
                    "role": "assistant",
                    "content": None,
                    "name": "assistant",
                    "tool_calls": [
                        {"id": cid, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                    ],
                },
                {"role": "tool", "tool_call_id": cid, "content": f"sunny in {city}"},
                {"role": "assistant", "content": f"Forecast: sunny in {city}", "name": "assistant"},
            ][phase]
            sender = "user" if phase in (0, 2) else "assistant"
            rows.append((message, req, phase, sender))
    for message, req, seq, sender in rows:
        recipient = "assistant" if sender == "user" else "user"
        meta = {"adapter": "autogen-classic", "sender": sender, "recipient": recipient, "request": req, "seq": seq}
        mid = f"tool-result:{message['tool_call_id']}" if message["role"] == "tool" else f"classic:{req}:{seq}"
        store.append(conv, [message], message_ids=[mid], meta=[meta])
    stored = store.messages(conv)
    assert provider_violations(stored)  # the provider would refuse this history as it is stored
    return stored


def test_a_history_interleaved_by_an_older_version_does_not_stop_the_conversation(store: Store, tmp_path: Path) -> None:
    """A conversation stored invalid by an older version still answers: the model gets a repaired, provider-valid
    view holding every stored exchange, and the log itself is left as it was."""
    before = legacy_interleaved(store, "c1")
    seen: list[list[dict[str, Any]]] = []
    assert ask(store, "c1", "And Paris?", tmp_path, seen=seen) == "Forecast: sunny in Paris"
    assert seen and all(provider_violations(history) == [] for history in seen)
    sent = json.dumps(seen[0])
    assert all(f"Forecast: sunny in {city}" in sent and f"call_{city}" in sent for city in CITIES)
    assert store.messages("c1")[: len(before)] == before
    assert provider_violations(store.messages("c1")[len(before) :]) == []
    assert ask(store, "c1", "And Lyon?", tmp_path) == "Forecast: sunny in Lyon"


def group(store: Store, conv: str, tmp_path: Path, **model: Any) -> tuple[Any, Any]:
    """A fresh user proxy and group chat manager (a user and an assistant) for one request on ``conv``."""
    import autogen

    user = autogen.UserProxyAgent("user", human_input_mode="NEVER", code_execution_config=False)
    assistant = autogen.AssistantAgent("assistant", llm_config=LLM_CONFIG)
    manager = chatledger_group_chat(
        store,
        conv,
        [user, assistant],
        tools=[weather_tool(tmp_path / "effects")],
        model_client=ScriptedModelClient,
        model_client_kwargs=model,
    )
    return user, manager


def test_a_group_chat_on_a_history_interleaved_by_an_older_version_goes_on(store: Store, tmp_path: Path) -> None:
    """A group chat preloaded from an interleaved legacy history hands its model a provider-valid view and answers."""
    legacy_interleaved(store, "g1")
    seen: list[list[dict[str, Any]]] = []
    user, manager = group(store, "g1", tmp_path, seen=seen)
    chat = user.initiate_chat(manager, message="And Paris?", clear_history=False, silent=True)
    assert chat.summary == "Forecast: sunny in Paris"
    assert seen and all(provider_violations(history) == [] for history in seen)
    assert all(f"Forecast: sunny in {city}" in json.dumps(seen[0]) for city in CITIES)


def test_a_duplicate_of_a_finished_request_costs_no_model_call_and_no_tool_run(store: Store, tmp_path: Path) -> None:
    """Delivering a finished request again (same request id) returns its answer from the record: no model call,
    no tool run, nothing stored; also after other requests moved the conversation on."""
    assert ask(store, "c1", "Weather in Rome?", tmp_path, request_id="job-1") == "Forecast: sunny in Rome"
    assert ask(store, "c1", "And Oslo?", tmp_path, request_id="job-2") == "Forecast: sunny in Oslo"
    version, calls = store.version("c1"), model_calls(tmp_path / "calls")
    assert ask(store, "c1", "Weather in Rome?", tmp_path, request_id="job-1") == "Forecast: sunny in Rome"
    assert (store.version("c1"), model_calls(tmp_path / "calls")) == (version, calls)
    assert runs(tmp_path / "effects") == ["Rome", "Oslo"]


def test_simultaneous_group_chats_on_one_conversation_store_a_provider_valid_history(
    store: Store, tmp_path: Path
) -> None:
    """Group chat requests running at once on one conversation store whole turns: valid history, one run per call."""
    meet = (str(tmp_path / "meet"), len(CITIES), 0.5)

    def request(city: str) -> str:
        user, manager = group(store, "g1", tmp_path, meet=meet, calls_file=str(tmp_path / "calls"))
        chat = user.initiate_chat(manager, message=f"Weather in {city}?", clear_history=False, silent=True)
        return str(chat.summary)

    answers = concurrently(request, CITIES)
    assert answers == {city: f"Forecast: sunny in {city}" for city in CITIES}
    assert provider_violations(store.messages("g1")) == []
    assert sorted(runs(tmp_path / "effects")) == sorted(CITIES)
    assert model_calls(tmp_path / "calls") == 2 * len(CITIES)


@pytest.mark.parametrize("chat_mode", ["sync-chat", "async-chat"])
@pytest.mark.parametrize("tool_mode", ["def", "async-def"])
def test_every_tool_form_gets_its_idempotency_key(store: Store, tmp_path: Path, chat_mode: str, tool_mode: str) -> None:
    """Inside a classic tool, sync or async, in a sync or async chat, current_idempotency_key() names the call."""
    keys: list[str | None] = []

    def sync_tool(city: str) -> str:
        """Get the current weather for a city."""
        keys.append(current_idempotency_key())
        return f"sunny in {city}"

    async def async_tool(city: str) -> str:
        """Get the current weather for a city."""
        keys.append(current_idempotency_key())
        return f"sunny in {city}"

    tool = sync_tool if tool_mode == "def" else async_tool
    tool.__name__ = "get_weather"
    assistant, user = chatledger_pair(
        store, "c1", llm_config=LLM_CONFIG, tools=[tool], model_client=ScriptedModelClient
    )
    if chat_mode == "sync-chat":
        user.initiate_chat(assistant, message="Weather in Rome?", silent=True)
    else:
        asyncio.run(user.a_initiate_chat(assistant, message="Weather in Rome?", silent=True))
    call_id = store.messages("c1")[1]["tool_calls"][0]["id"]
    assert keys == [f"c1/{call_id}"]


def test_concurrent_duplicates_of_one_request_cost_one_request_of_model_calls(store: Store, tmp_path: Path) -> None:
    """Four deliveries of one request at once (same request id) get one answer for the price of one request:
    two model calls, one tool run, one stored turn."""
    copies = ["a", "b", "c", "d"]
    answers = concurrently(
        lambda _: ask(store, "c1", "Weather in Rome?", tmp_path, request_id="job-1", delay=0.3), copies
    )
    assert answers == dict.fromkeys(copies, "Forecast: sunny in Rome")
    assert model_calls(tmp_path / "calls") == 2
    assert runs(tmp_path / "effects") == ["Rome"]
    assert [m["role"] for m in store.messages("c1")] == ["user", "assistant", "tool", "assistant"]


def test_a_request_that_waited_runs_on_the_previous_request_result(store: Store, tmp_path: Path) -> None:
    """Different requests at once are served one turn at a time: each model call sees every turn stored before."""
    seen: list[list[dict[str, Any]]] = []
    answers = concurrently(lambda city: ask(store, "c1", f"Weather in {city}?", tmp_path, seen=seen, delay=0.1), CITIES)
    assert answers == {city: f"Forecast: sunny in {city}" for city in CITIES}
    firsts = sorted(len(history) for history in seen if history[-1]["role"] == "user")
    assert firsts == [2, 6, 10]  # system + prompt, after zero, one and two stored turns of four messages


def test_a_request_on_a_busy_conversation_gets_conversation_busy_and_stores_nothing(
    store: Store, tmp_path: Path
) -> None:
    """While another request holds the conversation's turn past ``wait_seconds``, a request gets ConversationBusy:
    no model call, nothing stored; once the turn is free the same request runs."""
    store.start_conversation("c1")
    holder = TurnGate(store).enter("c1", "someone-else").turn
    assert holder is not None
    with pytest.raises(ConversationBusy) as busy:
        ask(store, "c1", "Weather in Rome?", tmp_path, request_id="job-1", wait_seconds=0.2)
    assert busy.value.holder == "someone-else" and busy.value.retry_after is not None
    assert store.messages("c1") == [] and model_calls(tmp_path / "calls") == 0
    holder.release()
    assert ask(store, "c1", "Weather in Rome?", tmp_path, request_id="job-1") == "Forecast: sunny in Rome"
