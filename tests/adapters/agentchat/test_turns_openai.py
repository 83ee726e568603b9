"""AgentChat under real traffic: AutoGen's OpenAIChatCompletionClient (streaming) against a strict local server."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from autogen_core.tools import FunctionTool

from chatledger.adapters.agentchat import chatledger_agent
from chatledger.store import (
    ConflictError,
    ConversationBusy,
    InvalidHistoryError,
    Store,
    current_idempotency_key,
    open_store,
)
from chatledger.store.validity import is_provider_valid

from ...support.openai_server import Running, client, serve

pytestmark = pytest.mark.anyio


@pytest.fixture
def server() -> Iterator[Running]:
    """The strict OpenAI-compatible server, answering after 0.1 s (so concurrent deliveries overlap)."""
    with serve(delay=0.1) as running:
        yield running


def runs_of(effects: Path) -> list[tuple[str, str | None]]:
    """Every tool run recorded by ``get_weather``: (city, idempotency key)."""
    if not effects.exists():
        return []
    with sqlite3.connect(effects) as conn:
        return list(conn.execute("SELECT city, key FROM runs ORDER BY rowid"))


def weather_tool(effects: Path) -> Any:
    """A plain ``def`` tool that records each run (and the key it saw) in a SQLite file."""

    def get_weather(city: str) -> str:
        """The weather in a city."""
        with sqlite3.connect(effects, timeout=30) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS runs (city TEXT, key TEXT)")
            conn.execute("INSERT INTO runs VALUES (?, ?)", (city, current_idempotency_key()))
        return f"sunny in {city}"

    return get_weather


async def ask(store: Store, server: Running, conv: str, rid: str, prompt: str, tool: Any, **options: Any) -> str:
    """One request as an HTTP handler runs it: fresh agent, real streaming client."""
    model = client(server.url)
    agent = chatledger_agent(
        store,
        conv,
        name="assistant",
        request_id=rid,
        model_client=model,
        tools=[tool],
        reflect_on_tool_use=True,
        **{"model_client_stream": True, **options},
    )
    try:
        result = await agent.run(task=prompt)
    finally:
        await model.close()
    return result.messages[-1].to_text()


async def test_concurrent_duplicates_cost_one_requests_model_calls(
    sqlite_store: Store, server: Running, tmp_path: Path
) -> None:
    """Eight concurrent deliveries of one request make the model requests of one request, and run its tool once."""
    effects = tmp_path / "runs.db"
    tool = weather_tool(effects)
    conv = sqlite_store.start_conversation()
    answers = await asyncio.gather(*(ask(sqlite_store, server, conv, "m1", "weather Rome", tool) for _ in range(8)))
    assert set(answers) == {"It is sunny in Rome."}
    assert server.stats.as_json()["requests"] == 2  # the tool-call turn and the answer: once
    assert [city for city, _ in runs_of(effects)] == ["Rome"]
    assert is_provider_valid(sqlite_store.history(conv))


async def test_concurrent_different_requests_leave_a_valid_history(
    sqlite_store: Store, server: Running, tmp_path: Path
) -> None:
    """Different requests at once on one conversation (the client not streaming) run one after another; the
    provider never rejects a history."""
    effects = tmp_path / "runs.db"
    tool = weather_tool(effects)
    conv = sqlite_store.start_conversation()
    cities = ["Rome", "Paris", "Oslo", "Lima"]
    plain = {"model_client_stream": False}
    answers = await asyncio.gather(
        *(ask(sqlite_store, server, conv, f"m-{c}", f"weather {c}", tool, **plain) for c in cities)
    )
    assert answers == [f"It is sunny in {c}." for c in cities]
    stats = server.stats.as_json()
    assert stats["rejected"] == 0 and stats["requests"] == 2 * len(cities)
    assert sorted(city for city, _ in runs_of(effects)) == sorted(cities)
    assert is_provider_valid(sqlite_store.history(conv))


async def test_a_request_waits_bounded_then_gets_conversation_busy(
    sqlite_store: Store, server: Running, tmp_path: Path
) -> None:
    """A second request that cannot wait (wait_seconds=0) gets ConversationBusy and stores nothing."""
    tool = weather_tool(tmp_path / "runs.db")
    conv = sqlite_store.start_conversation()
    first = asyncio.create_task(ask(sqlite_store, server, conv, "m1", "weather Rome", tool))
    while not server.stats.as_json()["requests"]:
        await asyncio.sleep(0.01)
    before = sqlite_store.messages(conv)
    with pytest.raises(ConversationBusy) as caught:
        await ask(sqlite_store, server, conv, "m2", "hello", tool, wait_seconds=0)
    assert caught.value.holder == "m1" and caught.value.request_id == "m2"
    assert sqlite_store.messages(conv) == before
    await first
    assert await ask(sqlite_store, server, conv, "m2", "hello", tool, wait_seconds=0) == "You said: hello"


@pytest.mark.parametrize("form", ["def", "async def", "FunctionTool(def)"])
async def test_every_tool_form_gets_its_idempotency_key(
    sqlite_store: Store, server: Running, tmp_path: Path, form: str
) -> None:
    """Inside a plain def tool, an async def tool and a FunctionTool over a def, the key is the call's stable key."""
    effects = tmp_path / "runs.db"
    sync = weather_tool(effects)

    async def get_weather(city: str) -> str:
        """The weather in a city."""
        return sync(city)

    tool: Any = {"def": sync, "async def": get_weather}.get(form) or FunctionTool(sync, description="weather")
    conv = sqlite_store.start_conversation()
    await ask(sqlite_store, server, conv, "m1", "weather Rome", tool)
    ((city, key),) = runs_of(effects)
    assert city == "Rome"
    call_id = sqlite_store.history(conv)[1]["tool_calls"][0]["id"]
    assert key == f"{conv}/{call_id}"


async def test_an_invalid_stored_history_is_refused_before_any_model_call(
    sqlite_store: Store, server: Running, tmp_path: Path
) -> None:
    """A stored history that breaks the provider rule raises InvalidHistoryError naming the position; the model
    is never sent it (no HTTP 400)."""
    conv = sqlite_store.start_conversation()

    def calls(cid: str) -> dict[str, Any]:
        function = {"name": "get_weather", "arguments": '{"city": "x"}'}
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": cid, "type": "function", "function": function}],
        }

    # What the old classic adapter stored for two simultaneous requests.
    sqlite_store.append(
        conv,
        [
            {"role": "user", "content": "weather x"},
            {"role": "user", "content": "weather x"},
            calls("a"),
            calls("b"),
            {"role": "tool", "tool_call_id": "a", "content": "sunny"},
            {"role": "tool", "tool_call_id": "b", "content": "sunny"},
        ],
    )
    with pytest.raises(InvalidHistoryError) as caught:
        await ask(sqlite_store, server, conv, "m3", "hello", weather_tool(tmp_path / "runs.db"))
    assert caught.value.violations[0].index == 2
    assert server.stats.as_json()["requests"] == 0


async def test_reusing_a_message_id_for_other_content_names_the_clients_id(
    sqlite_store: Store, server: Running, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A request id reused with different content is a ConflictError naming the client's id, with no
    OpenTelemetry 'Failed to detach context' traceback."""
    tool = weather_tool(tmp_path / "runs.db")
    conv = sqlite_store.start_conversation()
    await ask(sqlite_store, server, conv, "client-42", "hello", tool)
    caplog.set_level(logging.ERROR)
    with pytest.raises(ConflictError) as caught:
        await ask(sqlite_store, server, conv, "client-42", "something else", tool)
    assert "client-42" in str(caught.value)
    assert "Failed to detach context" not in caplog.text


def test_the_server_rejects_what_openai_rejects(server: Running) -> None:
    """The test server answers 400 'tool_call_ids did not have response messages' for a cut tool-call turn."""
    import httpx

    function = {"name": "f", "arguments": "{}"}
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": function}]},
        {"role": "user", "content": "y"},
    ]
    response = httpx.post(f"{server.url}/chat/completions", json={"model": "m", "messages": messages})
    assert response.status_code == 400
    assert "tool_call_ids did not have response messages: c1" in response.json()["error"]["message"]


async def test_concurrent_duplicates_across_store_handles_on_postgres(
    postgres_url: str, server: Running, tmp_path: Path
) -> None:
    """On PostgreSQL too, concurrent duplicates (each with its own store handle) cost one request's model calls."""
    effects = tmp_path / "runs.db"
    tool = weather_tool(effects)
    stores = [open_store(postgres_url) for _ in range(4)]
    try:
        conv = stores[0].start_conversation()
        answers = await asyncio.gather(*(ask(s, server, conv, "m1", "weather Oslo", tool) for s in stores))
        assert set(answers) == {"It is sunny in Oslo."}
        assert server.stats.as_json()["requests"] == 2
        assert len(runs_of(effects)) == 1
    finally:
        for s in stores:
            s.close()
