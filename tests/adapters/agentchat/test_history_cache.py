"""The per-process history cache: a request reads only what was appended since, and never more than
a read without the cache would hand out (erasure, tenants, keys, other processes' appends)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from autogen_core import FunctionCall
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import FunctionTool
from pydantic import BaseModel

from chatledger.adapters.agentchat import chatledger_agent
from chatledger.adapters.agentchat.context import model_view
from chatledger.adapters.agentchat.history import HISTORY_CACHE, HistoryCache
from chatledger.adapters.agentchat.models import request_key
from chatledger.adapters.scripted import ScriptedChatCompletionClient
from chatledger.store import ConflictError, NotFoundError, Store, open_store
from chatledger.store.errors import ChatledgerError, ErasedError, InvalidHistoryError
from chatledger.store.handle import Store as _Store
from chatledger.store.integrity.crypto import EncryptingCodec
from tests.store.integrity.scenario import tamper_sqlite

KEY = os.urandom(32)
SECRET = "my card number is 4111 1111 1111 1111"


def _old_request_key(
    agent: str,
    messages: Sequence[LLMMessage],
    tools: Sequence[Any] = (),
    json_output: Any = None,
    extra_create_args: Mapping[str, Any] | None = None,
) -> str:
    """request_key as it was first written (the key recorded conversations are replayed by)."""
    output = json_output.__name__ if isinstance(json_output, type) else json_output
    body = {
        "agent": agent,
        "messages": [m.model_dump(mode="json") for m in messages],
        "tools": [dict(t.schema) if isinstance(t, FunctionTool) else dict(t) for t in tools],
        "json_output": output,
        "extra": dict(extra_create_args or {}),
    }
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return "llm:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


class Answer(BaseModel):
    """A structured answer."""

    text: str


def _weather(city: str) -> str:
    """The weather in a city."""
    return city


def test_request_key_is_unchanged_for_varied_requests() -> None:
    """request_key gives the same key as before for unicode, tools, tool turns, json_output and extra args."""
    call = FunctionCall(id="call-1", name="weather", arguments='{"city": "Zürich"}')
    history: list[LLMMessage] = [
        SystemMessage(content="Sei gentile. 日本語も話せます 🌍"),
        UserMessage(content='Wie ist das Wetter in Zürich? \u2028 "quoted" \\ back', source="user"),
        AssistantMessage(content=[call], thought="let me check", source="assistant"),
        FunctionExecutionResultMessage(
            content=[FunctionExecutionResult(content="sonnig ☀", name="weather", call_id="call-1", is_error=False)]
        ),
        AssistantMessage(content="Es ist sonnig.", source="assistant"),
        UserMessage(content=["a part", "another"], source="bob"),
    ]
    tool = FunctionTool(_weather, description="The weather in a city.")
    schema = {"name": "raw", "description": "ünïcode", "parameters": {"type": "object", "properties": {}}}
    cases: list[tuple[str, list[LLMMessage], list[Any], Any, Any]] = [
        ("assistant", [], [], None, None),
        ("assistant", history, [], None, None),
        ("assistant", history, [tool, schema], None, None),
        ("ägent", history[:3], [tool], True, {"temperature": 0.2, "seed": 7}),
        ("assistant", history, [], Answer, {"z": [1, 2], "a": {"b": "ü"}, "obj": object.__new__(Answer)}),
        ("assistant", history, [schema], False, {1: "int key"}),
    ]
    for agent, messages, tools, json_output, extra in cases:
        expected = _old_request_key(agent, messages, tools, json_output, extra)
        assert request_key(agent, messages, tools, json_output, extra) == expected
        assert request_key(agent, messages, tools, json_output, extra) == expected  # texts from the cache


def test_request_key_is_unchanged_as_a_history_grows_shrinks_and_changes() -> None:
    """Keys of calls whose messages share a prefix with an earlier call's (the next call of a request, the
    next request) equal the old function's: growing, shorter, with a message replaced by an equal or a
    different one, for several agents and options at once."""
    base: list[LLMMessage] = [UserMessage(content=f"message {i} ü", source="user") for i in range(50)]
    calls: list[tuple[str, list[LLMMessage], Any]] = []
    for agent in ("a", "b"):
        for json_output in (None, True):
            calls += [
                (agent, base[:10], json_output),
                (agent, base[:30], json_output),
                (agent, base[:30], json_output),
                (agent, base[:20], json_output),
                (agent, [*base[:15], UserMessage(content="message 15 ü", source="user"), *base[16:40]], json_output),
                (agent, [*base[:15], UserMessage(content="changed", source="user"), *base[16:40]], json_output),
                (agent, base, json_output),
                (agent, [], json_output),
                (agent, base[:1], json_output),
            ]
    for agent, messages, json_output in calls:
        assert request_key(agent, messages, [], json_output) == _old_request_key(agent, messages, [], json_output)


def _start(store: Store, conv: str, n: int, text: str = "hello") -> None:
    store.start_conversation(conv, exist_ok=True)
    store.append(conv, [{"role": "user" if i % 2 == 0 else "assistant", "content": f"{text} {i}"} for i in range(n)])


def test_reads_include_messages_other_processes_appended(tmp_path: Path) -> None:
    """Between two cached reads another process appends: the second read has its messages, in order."""
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    store = open_store(url)
    _start(store, "c", 5)
    cache = HistoryCache()
    assert cache.read(store, "c").prefix("none") == (store.message_entries("c"), False)
    script = (
        "import sys; from chatledger.store import open_store; s = open_store(sys.argv[1]); "
        "s.append('c', [{'role': 'user', 'content': 'from another process'}], meta=[{'request': 'r2'}]); s.close()"
    )
    subprocess.run([sys.executable, "-c", script, url], check=True, timeout=60)
    entries, started = cache.read(store, "c").prefix("r2")
    assert started and entries == store.message_entries("c")[:5]
    assert cache.read(store, "c").prefix("none") == (store.message_entries("c"), False)
    assert cache.cached_messages() == 6
    store.close()


@pytest.mark.parametrize("grown", [False, True])
def test_a_log_rolled_back_behind_the_cache_is_read_afresh(tmp_path: Path, grown: bool) -> None:
    """The log is rolled back under a running process (a restore, or events deleted behind its back) and,
    optionally, written again past the version the cache read: the next read is the log's, never the
    kept messages the log no longer holds."""
    path = tmp_path / "chat.db"
    store = open_store(f"sqlite:///{path}")
    _start(store, "c", 6)
    cache = HistoryCache()
    assert cache.read(store, "c").prefix("none") == (store.message_entries("c"), False)
    tamper_sqlite(
        str(path), ["DELETE FROM events WHERE version > 4 AND sid = (SELECT sid FROM streams WHERE stream_id = 'c')"]
    )
    if grown:
        store.append("c", [{"role": "user", "content": f"rewritten {i}"} for i in range(5)])
    assert cache.read(store, "c").prefix("none") == (store.message_entries("c"), False)
    store.close()


@pytest.mark.anyio
async def test_an_erasure_in_another_process_stops_cached_reads(tmp_path: Path) -> None:
    """After another process erases a conversation this process has cached, no model is handed its text."""
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    store = open_store(url, encryption=KEY)
    store.start_conversation("c", messages=[{"role": "user", "content": SECRET}])
    seen: list[str] = []

    async def ask(rid: str) -> None:
        client = ScriptedChatCompletionClient(lambda messages: "noted")
        agent = chatledger_agent(store, "c", name="assistant", request_id=rid, model_client=client)
        try:
            await agent.run(task="what did I say?")
        finally:
            seen.extend(str(m.content) for call in client.create_calls for m in call["messages"])

    await ask("r1")
    assert SECRET in seen and HISTORY_CACHE.read(store, "c").prefix("none")[0][0][0]["content"] == SECRET
    seen.clear()
    script = (
        "import sys, base64; from chatledger.store import open_store; "
        "from chatledger.store.integrity.crypto import erase; "
        "s = open_store(sys.argv[1], encryption=base64.b64decode(sys.argv[2])); erase(s, 'c'); s.close()"
    )
    subprocess.run([sys.executable, "-c", script, url, base64.b64encode(KEY).decode()], check=True, timeout=60)
    with pytest.raises(ErasedError):
        HISTORY_CACHE.read(store, "c")
    with pytest.raises(ChatledgerError):
        await ask("r2")
    assert not any(SECRET in text for text in seen)
    store.close()


def test_a_cached_conversation_is_not_visible_to_another_tenant() -> None:
    """A conversation one tenant's handle cached is not found by another tenant's handle on the same log."""
    owner = open_store("memory://", tenant="a")
    other = _Store(owner.backend, tenant="b")
    _start(owner, "c", 3, "tenant a's words")
    assert len(HISTORY_CACHE.read(owner, "c").prefix("none")[0]) == 3
    with pytest.raises(NotFoundError):
        HISTORY_CACHE.read(other, "c")
    with pytest.raises((NotFoundError, ConflictError)):
        chatledger_agent(other, "c", name="assistant", model_client=ScriptedChatCompletionClient(lambda m: "x"))
    owner.close()


def test_a_handle_without_the_key_gets_the_error_it_gets_without_a_cache() -> None:
    """A keyed handle cached an encrypted conversation; a keyless handle on the same log gets the same error."""
    keyed_first = open_store("memory://")
    keyed = _Store(keyed_first.backend, codec=EncryptingCodec(KEY, keyed_first.backend.key_store()))
    _start(keyed, "c", 3, SECRET)
    assert HISTORY_CACHE.read(keyed, "c").prefix("none")[0][0][0]["content"] == f"{SECRET} 0"
    keyless = _Store(keyed_first.backend)
    with pytest.raises(ChatledgerError) as direct:
        keyless.message_entries("c")
    with pytest.raises(type(direct.value)) as cached:
        HISTORY_CACHE.read(keyless, "c")
    assert str(cached.value) == str(direct.value)
    keyed_first.close()


def test_the_cache_is_bounded_by_messages() -> None:
    """The least recently read conversations are dropped beyond max_messages; reads stay exact."""
    store = open_store("memory://")
    cache = HistoryCache(max_messages=10)
    for conv in ("a", "b", "big"):
        _start(store, conv, 12 if conv == "big" else 6)
    for conv in ("a", "b", "a", "big", "b"):
        assert cache.read(store, conv).prefix("none") == (store.message_entries(conv), False)
        assert cache.cached_messages() <= 10
    assert cache.cached_messages() == 6  # only "b": "a" was dropped for it, "big" never fits
    off = HistoryCache(max_messages=0)
    assert off.read(store, "a").prefix("none")[0] == store.message_entries("a")
    assert off.cached_messages() == 0
    store.close()


def _turn(i: int, agent: str) -> list[dict[str, Any]]:
    call = f"call-{i}"
    return [
        {"role": "user", "content": f"question {i}"},
        {"role": "assistant", "content": f"thinking {i}", "name": agent},
        {
            "role": "assistant",
            "content": None,
            "name": agent,
            "tool_calls": [{"id": call, "type": "function", "function": {"name": "weather", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": call, "content": f"result {i}"},
        {"role": "assistant", "content": f"answer {i}", "name": agent},
    ]


def _meta(i: int, agent: str) -> list[dict[str, Any]]:
    thought = {"llm": "thought", "source": agent}
    plain = {"source": agent}
    return [{"source": "user"}, thought, plain, {"source": agent, "tool_name": "weather"}, plain]


def test_an_extended_view_equals_a_view_built_whole() -> None:
    """Each agent's view, extended turn by turn from the cache, equals model_view over the whole history."""
    store = open_store("memory://")
    store.start_conversation("c")
    cache = HistoryCache()
    for i in range(6):
        agent = "alice" if i % 3 else "bob"
        store.append("c", _turn(i, agent), meta=_meta(i, agent))
        snapshot = cache.read(store, "c")
        entries, _ = snapshot.prefix("none")
        for viewer in ("alice", "bob", "carol"):
            assert snapshot.view(viewer, len(entries)) == model_view(entries, viewer)
            assert snapshot.view(viewer, len(entries) - 5) == model_view(entries[:-5], viewer)
    store.close()


def test_a_history_broken_after_a_cached_view_is_refused_naming_its_position() -> None:
    """Messages appended after a cached view that break the provider rule raise what a whole build raises."""
    store = open_store("memory://")
    store.start_conversation("c")
    cache = HistoryCache()
    store.append("c", _turn(0, "alice"), meta=_meta(0, "alice"))
    snapshot = cache.read(store, "c")
    snapshot.view("alice", len(snapshot.prefix("none")[0]))
    store.append("c", [{"role": "user", "content": "next"}])
    store.append("c", [{"role": "tool", "tool_call_id": "call-0", "content": "late"}], message_ids=["late"])
    entries = store.message_entries("c")
    with pytest.raises(InvalidHistoryError) as whole:
        model_view(entries, "alice")
    with pytest.raises(InvalidHistoryError) as cached:
        cache.read(store, "c").view("alice", len(entries))
    assert str(cached.value) == str(whole.value)
    store.close()
