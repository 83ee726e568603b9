"""AgentChat model-context windows: Buffered, HeadAndTail and TokenLimited, but never splitting a tool call."""

from __future__ import annotations

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
from hypothesis import given, settings
from hypothesis import strategies as st

from chatledger.adapters.agentchat.window import WindowOptions, window_view
from chatledger.store import ValidationError


def call_turn(ids: list[str]) -> list[LLMMessage]:
    return [
        AssistantMessage(content=[FunctionCall(id=i, name="f", arguments="{}") for i in ids], source="a"),
        FunctionExecutionResultMessage(
            content=[FunctionExecutionResult(call_id=i, content="ok", name="f", is_error=False) for i in ids]
        ),
    ]


@st.composite
def views(draw: st.DrawFn) -> list[LLMMessage]:
    messages: list[LLMMessage] = []
    if draw(st.booleans()):
        messages.append(SystemMessage(content="sys"))
    n = 0
    for _ in range(draw(st.integers(1, 10))):
        messages.append(UserMessage(content="u" * draw(st.integers(1, 80)), source="user"))
        for _ in range(draw(st.integers(0, 2))):
            width = draw(st.integers(1, 3))
            messages += call_turn([f"c{n + i}" for i in range(width)])
            n += width
        messages.append(AssistantMessage(content="a" * draw(st.integers(1, 80)), source="a"))
    return messages


def well_formed(messages: list[LLMMessage]) -> bool:
    """Every call is followed by its results and every result follows its call (the provider rule, AutoGen types)."""
    for i, m in enumerate(messages):
        if isinstance(m, FunctionExecutionResultMessage):
            before = messages[i - 1] if i else None
            if not (isinstance(before, AssistantMessage) and isinstance(before.content, list)):
                return False
            if {r.call_id for r in m.content} != {c.id for c in before.content}:
                return False
        if isinstance(m, AssistantMessage) and isinstance(m.content, list):
            after = messages[i + 1] if i + 1 < len(messages) else None
            if not isinstance(after, FunctionExecutionResultMessage):
                return False
    return True


class Counter:
    """A model client stand-in that counts tokens as characters / 4 (only count_tokens is used)."""

    def __init__(self) -> None:
        self.calls = 0

    def count_tokens(self, messages: Any, **_: Any) -> int:
        self.calls += 1
        return sum(len(str(m.content)) // 4 + 3 for m in messages)


@settings(max_examples=150, deadline=None)
@given(views(), st.one_of(st.none(), st.integers(1, 20)), st.one_of(st.none(), st.integers(5, 400)), st.booleans())
def test_every_window_keeps_calls_with_their_results(
    messages: list[LLMMessage], max_messages: int | None, max_tokens: int | None, keep_first_user: bool
) -> None:
    """Whatever the bounds, the view is well formed, keeps the head, ends with the newest message, is a suffix."""
    options = WindowOptions(max_messages, max_tokens, keep_first_user, model_client=Counter())  # type: ignore[arg-type]
    shown = window_view(messages, options)
    assert well_formed(shown)
    assert shown[-1] == messages[-1]
    head = 1 if isinstance(messages[0], SystemMessage) else 0
    head += 1 if keep_first_user and isinstance(messages[head], UserMessage) else 0
    assert shown[:head] == messages[:head]
    tail = shown[head:]
    assert messages[len(messages) - len(tail) :] == tail
    if max_messages is not None and len(tail) > 2:  # beyond the newest unit, the bound holds
        assert len(shown) <= max(max_messages, head + 2)


def test_a_buffer_never_starts_with_results_of_a_dropped_call() -> None:
    """AutoGen's BufferedChatCompletionContext can cut between a call and its results; this window cannot."""
    messages = [
        UserMessage(content="go", source="user"),
        *call_turn(["a", "b"]),
        AssistantMessage(content="done", source="a"),
    ]
    shown = window_view(messages, WindowOptions(max_messages=2))
    assert shown == messages[-1:]
    assert window_view(messages, WindowOptions(max_messages=3)) == messages[1:]


def test_the_model_clients_own_counter_is_used() -> None:
    """With a model client, its count_tokens decides the token bound."""
    counter = Counter()
    messages = [UserMessage(content="x" * 400, source="user"), AssistantMessage(content="y" * 40, source="a")]
    shown = window_view(messages, WindowOptions(max_tokens=50, model_client=counter))  # type: ignore[arg-type]
    assert shown == messages[-1:] and counter.calls >= 2


def test_bad_bounds_are_typed_errors() -> None:
    """A bound that is not a positive integer is a ValidationError naming it."""
    with pytest.raises(ValidationError, match="max_tokens"):
        WindowOptions(max_tokens=0)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "options",
    [{"buffer_size": 2}, {"buffer_size": 3}, {"max_tokens": 60}, {"buffer_size": 4, "keep_first_user": True}],
    ids=["buffer-2", "buffer-3", "tokens-60", "head-and-tail"],
)
async def test_windowed_agents_never_send_a_history_the_provider_refuses(
    tmp_path: Any, options: dict[str, Any]
) -> None:
    """A long conversation of parallel tool calls, sent through small windows with AutoGen's real OpenAI client
    (streaming) to a server that refuses invalid histories: every request is answered, none is refused."""
    from chatledger.adapters.agentchat import chatledger_agent
    from chatledger.store import open_store

    from ...support.openai_server import client, serve

    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    store = open_store(f"sqlite:///{tmp_path / 'chat.db'}")
    with serve() as server:
        for i, prompt in enumerate(["weather Rome Paris", "hello", "weather Oslo", "weather Lima Kyiv Baku", "bye"]):
            model = client(server.url)
            agent = chatledger_agent(
                store,
                "conv",
                name="assistant",
                request_id=f"r{i}",
                model_client=model,
                tools=[get_weather],
                reflect_on_tool_use=True,
                model_client_stream=True,
                **options,
            )
            try:
                result = await agent.run(task=prompt)
            finally:
                await model.close()
            assert result.messages[-1].to_text().startswith(("It is sunny", "You said"))
        stats = server.stats.as_json()
    assert stats["rejected"] == 0 and stats["requests"] == 8
    store.close()
