"""The seed failure modes, end to end through real AgentChat agents built fresh per request."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from autogen_agentchat.messages import ModelClientStreamingChunkEvent, TextMessage
from autogen_core.models import SystemMessage, UserMessage

from chatledger.adapters.agentchat import chatledger_agent
from chatledger.adapters.scripted import ScriptedChatCompletionClient, call
from chatledger.store import Store
from chatledger.store.messages import pending_tool_calls

from .helpers import book_table, dumps, effects, get_weather, stored_view

pytestmark = pytest.mark.anyio

SYSTEM = "You are a concierge."
SCRIPT: dict[str, list[Any]] = {
    "Weather in Rome?": [call("get_weather", city="Rome"), "It is sunny in Rome."],
    "Book for two": [
        [call("book_table", restaurant="Roscioli", people=2), call("get_weather", city="Rome")],
        "Booked, and it will be sunny.",
    ],
}


def agent(store: Store, client: Any, request_id: str, conv: str = "c1", **kwargs: Any) -> Any:
    """A fresh agent for one request, as a request handler builds it."""
    return chatledger_agent(
        store,
        conv,
        name="assistant",
        request_id=request_id,
        model_client=client,
        tools=[get_weather, book_table],
        system_message=SYSTEM,
        reflect_on_tool_use=True,
        **kwargs,
    )


def assert_valid(store: Store, conv: str = "c1") -> list[dict[str, Any]]:
    """The stored history is a valid OpenAI history with no duplicated message or tool result."""
    messages = store.history(conv)
    assert pending_tool_calls(messages) == []
    results = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    assert len(results) == len(set(results))
    calls = [c["id"] for m in messages for c in m.get("tool_calls") or []]
    assert len(calls) == len(set(calls)) == len(results)
    return messages


async def test_duplicate_delivery_runs_the_tool_once(sqlite_store: Store) -> None:
    """The same request delivered twice (fresh agents each time) runs its tool once and stores one turn."""
    first = await agent(sqlite_store, ScriptedChatCompletionClient(SCRIPT), "m1").run(task="Weather in Rome?")
    again_client = ScriptedChatCompletionClient(SCRIPT)
    again = await agent(sqlite_store, again_client, "m1").run(task="Weather in Rome?")
    assert effects("get_weather") == 1
    assert again_client.create_calls == []
    assert [m.id for m in again.messages] == [m.id for m in first.messages]
    assert len(assert_valid(sqlite_store)) == 4


async def test_retry_after_a_model_error_reuses_the_recorded_tool_turn(sqlite_store: Store) -> None:
    """A model error after the tool ran, then a retry: the tool does not run again and the history is whole."""
    failing = ScriptedChatCompletionClient(
        {"Weather in Rome?": [call("get_weather", city="Rome"), RuntimeError("503")]}
    )
    with pytest.raises(RuntimeError, match="503"):
        await agent(sqlite_store, failing, "m1").run(task="Weather in Rome?")
    assert effects("get_weather") == 1
    retry_client = ScriptedChatCompletionClient(SCRIPT)
    result = await agent(sqlite_store, retry_client, "m1").run(task="Weather in Rome?")
    assert result.messages[-1].to_text() == "It is sunny in Rome."
    assert effects("get_weather") == 1
    assert len(retry_client.create_calls) == 1  # only the answer after the tool was sampled again
    sent = retry_client.create_calls[0]["messages"]
    assert dumps(sent) == dumps([SystemMessage(content=SYSTEM), *stored_view(sqlite_store, "c1", "assistant")[:3]])
    assert len(assert_valid(sqlite_store)) == 4


async def test_two_workers_on_the_same_request_converge(db_url: str) -> None:
    """Two concurrent workers (separate stores, agents and model clients) on one request run the tool once."""
    from chatledger.store import open_store

    stores = [open_store(db_url), open_store(db_url)]
    clients = [ScriptedChatCompletionClient(SCRIPT, delay=0.05) for _ in stores]
    try:
        results = await asyncio.gather(
            *(agent(s, c, "m1").run(task="Weather in Rome?") for s, c in zip(stores, clients, strict=True))
        )
        assert effects("get_weather") == 1
        assert [m.id for m in results[0].messages] == [m.id for m in results[1].messages]
        assert results[0].messages[1].content == results[1].messages[1].content  # the same call ids
        assert len(assert_valid(stores[0])) == 4
    finally:
        for s in stores:
            s.close()


async def test_streaming_stores_final_messages_only(sqlite_store: Store) -> None:
    """With model streaming on, chunks reach the caller but only final messages are stored, once."""
    client = ScriptedChatCompletionClient(SCRIPT)
    a = agent(sqlite_store, client, "m1", model_client_stream=True)
    items = [item async for item in a.run_stream(task="Weather in Rome?")]
    chunks = [i for i in items if isinstance(i, ModelClientStreamingChunkEvent)]
    assert chunks, "the scripted model streams its text answer"
    final = [i for i in items if isinstance(i, TextMessage)][-1]
    events = [e for e in sqlite_store.events("c1") if hasattr(e, "message_id")]
    assert events[-1].message_id == final.id  # type: ignore[attr-defined]
    assert events[-1].message["content"] == "It is sunny in Rome."  # type: ignore[attr-defined]
    assert effects("get_weather") == 1
    assert len(assert_valid(sqlite_store)) == 4


async def test_parallel_tool_calls_in_one_turn_each_run_once(sqlite_store: Store) -> None:
    """Two tool calls in one model turn run once each, even when the request is delivered twice."""
    for _ in range(2):
        await agent(sqlite_store, ScriptedChatCompletionClient(SCRIPT), "m1").run(task="Book for two")
    assert (effects("book_table"), effects("get_weather")) == (1, 1)
    history = assert_valid(sqlite_store)
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "tool", "assistant"]


async def test_a_fresh_agent_sends_the_stored_history(sqlite_store: Store) -> None:
    """The next request's fresh agent sends the model exactly the stored conversation, then the new prompt."""
    await agent(sqlite_store, ScriptedChatCompletionClient(SCRIPT), "m1").run(task="Weather in Rome?")
    client = ScriptedChatCompletionClient(SCRIPT)
    await agent(sqlite_store, client, "m2").run(task="Book for two")
    first = client.create_calls[0]["messages"]
    expected = [SystemMessage(content=SYSTEM), *stored_view(sqlite_store, "c1", "assistant")[:4]]
    assert dumps(first) == dumps([*expected, UserMessage(content="Book for two", source="user")])
    assert len(assert_valid(sqlite_store)) == 9


async def test_a_tool_error_becomes_an_error_result_not_a_hang(sqlite_store: Store) -> None:
    """A tool that raises gives the model an error result (recorded once); run() completes."""

    def explode(city: str) -> str:
        """Always fails."""
        raise ValueError(f"no station in {city}")

    client = ScriptedChatCompletionClient({"Weather in Rome?": [call("explode", city="Rome"), "Sorry."]})
    a = chatledger_agent(sqlite_store, "c1", name="assistant", request_id="m1", model_client=client, tools=[explode])
    result = await asyncio.wait_for(a.run(task="Weather in Rome?"), timeout=10)
    tool_msg = next(m for m in sqlite_store.history("c1") if m["role"] == "tool")
    assert "no station in Rome" in tool_msg["content"]
    assert result.messages[-1].to_text().startswith("Sorry") or result.messages[-1].to_text()


async def test_two_workers_on_the_same_request_converge_on_postgres(postgres_url: str) -> None:
    """On PostgreSQL too, two concurrent workers on one request run the tool once and store one turn."""
    await test_two_workers_on_the_same_request_converge(postgres_url)
