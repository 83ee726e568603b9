"""``chatledger demo``: what chatledger is for, in one offline run.

An AgentChat concierge with two tools (``get_weather``, ``book_table``) talks
to a scripted model (no API key, no network) and every request is handled the
way a web server with several workers handles it: fresh agents built per
request, nothing shared but the store. The demo then reproduces the scaling
failures that make tools run twice — the same message delivered twice, a
retry after a model error that came after the tool ran, two workers on the
same request — and shows each tool's side-effect counter at one execution per
call; prints the chat history and the tool audit; replays the whole
conversation with new agents whose model and tools refuse to be called; and
verifies the log's hash chains.

With ``--model NAME`` and ``OPENAI_API_KEY`` set, the same walk-through runs
against a real model (``pip install 'chatledger[openai]'``).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from autogen_core.models import ChatCompletionClient

from chatledger.adapters.agentchat import chatledger_agent, replay
from chatledger.adapters.agentchat.session import Session
from chatledger.adapters.scripted import ScriptedChatCompletionClient, call
from chatledger.projections import tool_audit
from chatledger.store import Store, ValidationError, open_store

__all__ = ["DemoResult", "run_demo"]

SYSTEM = "You are a concierge in Rome. Use the tools to answer."

PROMPTS = {
    "weather": "What's the weather in Rome today?",
    "book": "Book a table for two at Roscioli at 8pm.",
    "compare": "How is the weather in Paris and in Berlin?",
    "retry": "And in Oslo?",
    "race": "Book a table for four at Da Enzo at 7pm.",
}

SCRIPT: dict[str, list[Any]] = {
    PROMPTS["weather"]: [call("get_weather", city="Rome"), "It is sunny in Rome, 24°C."],
    PROMPTS["book"]: [
        call("book_table", restaurant="Roscioli", people=2, time="20:00"),
        "Done: Roscioli, two people, 8pm.",
    ],
    PROMPTS["compare"]: [
        [call("get_weather", city="Paris"), call("get_weather", city="Berlin")],
        "Paris is cloudy; Berlin has light rain.",
    ],
    PROMPTS["retry"]: [call("get_weather", city="Oslo"), "Oslo: snow, -3°C."],
    PROMPTS["race"]: [
        call("book_table", restaurant="Da Enzo", people=4, time="19:00"),
        "Done: Da Enzo, four people, 7pm.",
    ],
}

WEATHER = {"Rome": "sunny, 24°C", "Paris": "cloudy, 14°C", "Berlin": "light rain, 11°C", "Oslo": "snow, -3°C"}


@dataclass
class DemoResult:
    """What the demo did, for tests and for ``--json``."""

    conversation_id: str
    executions: Counter[str] = field(default_factory=Counter)
    distinct_calls: Counter[str] = field(default_factory=Counter)
    messages: int = 0
    replay_model_calls: int = 0
    replay_tool_runs: int = 0
    replay_identical: bool = False
    verified: bool = False

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "conversation": self.conversation_id,
            "messages": self.messages,
            "tools": {
                name: {"distinct_calls": self.distinct_calls[name], "executions": self.executions[name]}
                for name in sorted(self.distinct_calls | self.executions)
            },
            "replay": {
                "model_calls": self.replay_model_calls,
                "tool_runs": self.replay_tool_runs,
                "identical": self.replay_identical,
            },
            "verified": self.verified,
        }


class _Tools:
    """The demo's tools; each execution is counted, as a real side effect would be."""

    def __init__(self, counter: Counter[str]) -> None:
        self.counter = counter

    def functions(self) -> list[Callable[..., str]]:
        counter = self.counter

        def get_weather(city: str) -> str:
            """Today's weather in a city."""
            counter["get_weather"] += 1
            return WEATHER.get(city, "unknown")

        def book_table(restaurant: str, people: int, time: str) -> str:
            """Book a restaurant table."""
            counter["book_table"] += 1
            return f"booked {restaurant} for {people} at {time}"

        return [get_weather, book_table]


def _refusing_tools(counter: Counter[str]) -> list[Callable[..., str]]:
    """Tools with the demo's names that count and refuse every call: replay must not run them."""

    def get_weather(city: str) -> str:
        """Today's weather in a city."""
        counter["get_weather"] += 1
        raise RuntimeError("replay ran a tool")

    def book_table(restaurant: str, people: int, time: str) -> str:
        """Book a restaurant table."""
        counter["book_table"] += 1
        raise RuntimeError("replay ran a tool")

    return [get_weather, book_table]


class _FailOnce(ScriptedChatCompletionClient):
    """A model that fails with a 503 on its second call: after the tool ran, before the answer."""

    def __init__(self, inner: ChatCompletionClient | None) -> None:
        super().__init__(SCRIPT)
        self._inner = inner
        self._calls = 0

    async def create(self, messages: Sequence[Any], **kwargs: Any) -> Any:
        self._calls += 1
        if self._calls == 2:
            raise RuntimeError("503 Service Unavailable (simulated, after the tool ran)")
        if self._inner is not None:
            return await self._inner.create(messages, **kwargs)
        return await super().create(messages, **kwargs)


def _real_client(model: str) -> ChatCompletionClient:
    if not os.environ.get("OPENAI_API_KEY"):
        raise ValidationError("--model", "needs OPENAI_API_KEY in the environment")
    try:
        from autogen_ext.models.openai import OpenAIChatCompletionClient
    except ImportError:
        raise ValidationError("--model", "needs the OpenAI client: pip install 'chatledger[openai]'") from None
    return OpenAIChatCompletionClient(model=model)


async def _handle(
    store: Store,
    conversation_id: str,
    request_id: str,
    prompt: str,
    client: ChatCompletionClient,
    tools: list[Callable[..., str]],
) -> str:
    """One web request: fresh agents, one turn, everything persisted through chatledger."""
    agent = chatledger_agent(
        store,
        conversation_id,
        name="concierge",
        request_id=request_id,
        model_client=client,
        tools=tools,
        system_message=SYSTEM,
        reflect_on_tool_use=True,
    )
    result = await agent.run(task=prompt)
    return result.messages[-1].to_text()


async def _run(url: str, model: str | None, say: Callable[[str], None]) -> DemoResult:
    store = open_store(url)
    conversation_id = store.start_conversation(metadata={"demo": "concierge", "model": model or "scripted"})
    result = DemoResult(conversation_id)
    tools = _Tools(result.executions).functions()

    def client() -> ChatCompletionClient:
        return _real_client(model) if model else ScriptedChatCompletionClient(SCRIPT)

    say(f"chatledger demo: store {url}, conversation {conversation_id}\n")
    say("1. A conversation, each turn handled by fresh agents in a new request")
    for i, key in enumerate(("weather", "book", "compare"), 1):
        answer = await _handle(store, conversation_id, f"req-{i}", PROMPTS[key], client(), tools)
        say(f"   request {i}: {PROMPTS[key]!r} -> {answer!r}")

    say("\n2. The scaling failures that run tools twice, and what chatledger makes of them")
    answer = await _handle(store, conversation_id, "req-2", PROMPTS["book"], client(), tools)
    say(f"   a. request 2 delivered again (same client message id) -> {answer!r}")
    say(f"      book_table executions so far: {result.executions['book_table']}")
    flaky = _FailOnce(_real_client(model) if model else None)
    try:
        await _handle(store, conversation_id, "req-4", PROMPTS["retry"], flaky, tools)
    except RuntimeError as exc:
        say(f"   b. request 4 failed after its tool ran: {exc}")
    answer = await _handle(store, conversation_id, "req-4", PROMPTS["retry"], client(), tools)
    say(f"      the retry reuses the recorded tool-call turn and result -> {answer!r}")
    second = open_store(url)
    try:
        answers = await asyncio.gather(
            _handle(store, conversation_id, "req-5", PROMPTS["race"], client(), tools),
            _handle(second, conversation_id, "req-5", PROMPTS["race"], client(), tools),
        )
    finally:
        second.close()
    say(f"   c. two workers took request 5 at once -> {answers[0]!r} / {answers[1]!r}")

    audit = tool_audit(store, conversation_id=conversation_id)
    result.distinct_calls.update(row.tool for row in audit)
    say("\n   tool          distinct calls  executions")
    for name in sorted(result.distinct_calls):
        say(f"   {name:<13} {result.distinct_calls[name]:>14}  {result.executions[name]:>10}")

    say("\n3. The chat history (what the next request's fresh agent sends the model)")
    history = store.history(conversation_id)
    result.messages = len(history)
    for msg in history:
        say("   " + _line(msg))
    say("\n   The tool audit")
    say(f"   {'tool':<11} {'status':<10} {'attempts':>8}  {'duration':>9}  arguments -> result")
    for row in audit:
        say(
            f"   {row.tool:<11} {row.status:<10} {row.attempts:>8}  {row.duration_ms or 0:>7.1f}ms  "
            f"{row.arguments} -> {row.result if row.result is not None else row.error}"
        )

    say("\n4. Replay with new agents: recorded model answers and tool results only")
    refused: Counter[str] = Counter()
    silent_model = ScriptedChatCompletionClient([])

    def build(session: Session) -> Any:
        return chatledger_agent(
            session,
            name="concierge",
            model_client=silent_model,
            tools=_refusing_tools(refused),
            system_message=SYSTEM,
            reflect_on_tool_use=True,
        )

    report = await replay(store, conversation_id, build)
    result.replay_model_calls = len(silent_model.create_calls)
    result.replay_tool_runs = sum(refused.values())
    replayed = [msg for _, msg, _ in report.transcript]
    stored = store.messages(conversation_id)
    result.replay_identical = replayed == stored[-len(replayed) :] and len(replayed) == len(stored)
    say(
        f"   {report.requests} requests re-driven: {result.replay_model_calls} model calls, "
        f"{result.replay_tool_runs} tool runs, transcript identical: {result.replay_identical}"
    )

    say("\n5. verify: every event's hash chain")
    verification = store.verify()
    result.verified = verification.ok
    say(f"   {verification.streams} streams, {verification.events} events: {'OK' if verification.ok else 'BROKEN'}")
    store.close()
    say(f"\nInspect it: chatledger show {conversation_id} ; chatledger audit ; chatledger replay {conversation_id}")
    return result


def _line(msg: dict[str, Any]) -> str:
    role = msg.get("role")
    if role == "tool":
        return f"[tool {msg.get('tool_call_id')}] {msg.get('content')}"
    calls = msg.get("tool_calls") or []
    if calls:
        inner = ", ".join(f"{c['function']['name']}({c['function'].get('arguments', '')})" for c in calls)
        return f"[{role}] calls {inner}"
    content = msg.get("content")
    return f"[{role}] {content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)}"


def run_demo(url: str, model: str | None = None, say: Callable[[str], None] = print) -> DemoResult:
    """Run the whole demo against the store at ``url`` and return what it counted."""
    return asyncio.run(_run(url, model, say))
