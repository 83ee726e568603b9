"""Classic AutoGen on chatledger: fresh agents per request, history in the log, tools once, replay."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from chatledger.adapters.classic import chatledger_group_chat, chatledger_pair, replay_classic
from chatledger.store import ConflictError, ReplayDivergence, Store
from chatledger.store.messages import pending_tool_calls

from .fakes import LLM_CONFIG, ScriptedModelClient, async_weather_tool, runs, weather_tool

pytest.importorskip("autogen")


def handle(store: Store, conv: str, prompt: str, effects: Path, **options: Any) -> str:
    """The request handler of the recipe: fresh agents, one chat, the summary."""
    options.setdefault("model_client", ScriptedModelClient)
    assistant, user = chatledger_pair(store, conv, llm_config=LLM_CONFIG, tools=[weather_tool(effects)], **options)
    result = user.initiate_chat(assistant, message=prompt, clear_history=False, silent=True)
    return str(result.summary)


def test_history_persists_between_requests_from_the_assistant_point_of_view(store: Store, tmp_path: Path) -> None:
    """A second request's fresh assistant sends the model the whole stored conversation, roles as it sees them."""
    effects = tmp_path / "effects"
    assert handle(store, "c1", "Weather in Rome?", effects) == "Forecast: sunny in Rome"
    seen: list[list[dict[str, Any]]] = []
    assert handle(store, "c1", "And Oslo?", effects, model_client_kwargs={"seen": seen}) == "Forecast: sunny in Oslo"
    first_call = seen[0]
    assert [m["role"] for m in first_call] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert first_call[1]["content"] == "Weather in Rome?"
    assert first_call[3]["content"] == "sunny in Rome"
    assert runs(effects) == ["Rome", "Oslo"]


def test_messages_are_stored_in_openai_format_with_sender_and_recipient(store: Store, tmp_path: Path) -> None:
    """Each send is one OpenAI message (one per tool result) whose meta names the agents, request and step."""
    handle(store, "c1", "Weather in Rome?", tmp_path / "effects", request_id="req-1")
    history = store.history("c1")
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
    call_id = history[1]["tool_calls"][0]["id"]
    assert history[2] == {"role": "tool", "tool_call_id": call_id, "content": "sunny in Rome"}
    events = [e for e in store.events("c1") if hasattr(e, "message_id")]
    ids = [e.message_id for e in events]  # type: ignore[attr-defined]
    assert ids == ["classic:req-1:0", "classic:req-1:1", f"tool-result:{call_id}", "classic:req-1:3"]
    metas = [e.meta for e in events]  # type: ignore[attr-defined]
    assert [(m["sender"], m["recipient"], m["seq"]) for m in metas] == [
        ("user", "assistant", 0),
        ("assistant", "user", 1),
        ("user", "assistant", 2),
        ("assistant", "user", 3),
    ]


def test_fresh_agents_hold_exactly_what_the_live_agents_held(store: Store, tmp_path: Path) -> None:
    """Preloaded histories equal the live ones, each from its agent's point of view (roles are relative)."""
    effects = tmp_path / "effects"

    def pair() -> tuple[Any, Any]:
        return chatledger_pair(
            store, "c1", llm_config=LLM_CONFIG, tools=[weather_tool(effects)], model_client=ScriptedModelClient
        )

    live_assistant, live_user = pair()
    live_user.initiate_chat(live_assistant, message="Weather in Rome?", clear_history=False, silent=True)
    assistant, user = pair()
    assert user.chat_messages[assistant] == live_user.chat_messages[live_assistant]
    assert assistant.chat_messages[user] == live_assistant.chat_messages[live_user]
    assert [m["role"] for m in user.chat_messages[assistant]] == ["assistant", "assistant", "tool", "user"]
    assert [m["role"] for m in assistant.chat_messages[user]] == ["user", "assistant", "tool", "assistant"]


def test_async_chat_with_an_async_tool_runs_it_once_through_the_executor(store: Store, tmp_path: Path) -> None:
    """a_initiate_chat goes through a_execute_function: the async tool runs once and its outcome is in the ledger."""
    effects = tmp_path / "effects"
    assistant, user = chatledger_pair(
        store, "c1", llm_config=LLM_CONFIG, tools=[async_weather_tool(effects)], model_client=ScriptedModelClient
    )
    result = asyncio.run(user.a_initiate_chat(assistant, message="Weather in Lima?", silent=True))
    assert result.summary == "Forecast: sunny in Lima"
    assert runs(effects) == ["Lima"]
    call_id = store.history("c1")[1]["tool_calls"][0]["id"]
    again = asyncio.run(user.a_execute_function({"name": "get_weather", "arguments": '{"city": "Lima"}'}, call_id))
    assert again == (True, {"name": "get_weather", "role": "function", "content": "sunny in Lima"})
    assert runs(effects) == ["Lima"]


def test_a_different_input_for_a_recorded_request_is_a_conflict(store: Store, tmp_path: Path) -> None:
    """Re-using a request id with another prompt raises ConflictError instead of answering the old prompt."""
    handle(store, "c1", "Weather in Rome?", tmp_path / "effects", request_id="req-1")
    before = store.version("c1")
    with pytest.raises(ConflictError):
        handle(store, "c1", "Weather in Oslo?", tmp_path / "effects", request_id="req-1")
    assert store.version("c1") == before


def test_a_crashed_request_leaves_no_unanswered_call_for_the_next_one(store: Store, tmp_path: Path) -> None:
    """A tool call whose request died before its result is closed before the next request reaches the model."""
    effects = tmp_path / "effects"
    call = {"id": "call_dead", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    store.start_conversation("c1")
    store.append(
        "c1", [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [call]}]
    )
    assert handle(store, "c1", "Weather in Rome?", effects) == "Forecast: sunny in Rome"
    assert pending_tool_calls(store.history("c1")) == []
    assert runs(effects) == ["Rome"]


def test_group_chat_records_each_speaker_once_and_preloads_the_next_request(store: Store, tmp_path: Path) -> None:
    """A GroupChatManager's relays are not recorded; a fresh group chat resumes with the stored messages."""
    import autogen

    effects = tmp_path / "effects"

    def build() -> tuple[Any, Any]:
        user = autogen.UserProxyAgent("user", human_input_mode="NEVER", code_execution_config=False)
        assistant = autogen.AssistantAgent("assistant", llm_config=LLM_CONFIG)
        manager = chatledger_group_chat(
            store, "g1", [user, assistant], tools=[weather_tool(effects)], model_client=ScriptedModelClient
        )
        return user, manager

    user, manager = build()
    result = user.initiate_chat(manager, message="Weather in Rome?", clear_history=False, silent=True)
    assert result.summary == "Forecast: sunny in Rome"
    assert [m["role"] for m in store.history("g1")] == ["user", "assistant", "tool", "assistant"]
    user, manager = build()
    assert len(manager.groupchat.messages) == 4
    user.initiate_chat(manager, message="And Oslo?", clear_history=False, silent=True)
    assert [m["role"] for m in store.history("g1")] == ["user", "assistant", "tool", "assistant"] * 2
    assert runs(effects) == ["Rome", "Oslo"]


def test_replay_drives_the_conversation_again_without_model_or_tools(store: Store, tmp_path: Path) -> None:
    """replay_classic re-runs every recorded request from the record: same answers, no tool run, nothing written."""
    effects = tmp_path / "effects"
    handle(store, "c1", "Weather in Rome?", effects)
    handle(store, "c1", "And Oslo?", effects)
    version = store.version("c1")
    results = replay_classic(store, "c1")
    assert [r.summary for r in results] == ["Forecast: sunny in Rome", "Forecast: sunny in Oslo"]
    assert runs(effects) == ["Rome", "Oslo"]
    assert store.version("c1") == version


def test_replay_with_a_different_model_reports_the_divergence(store: Store, tmp_path: Path) -> None:
    """A model that answers differently from the record stops the replay with ReplayDivergence at that message."""
    handle(store, "c1", "Weather in Rome?", tmp_path / "effects")
    with pytest.raises(ReplayDivergence) as err:
        replay_classic(store, "c1", llm_config=LLM_CONFIG, model_client=ScriptedModelClient)
    assert err.value.position == 3
    assert runs(tmp_path / "effects") == ["Rome"]
