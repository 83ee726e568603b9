"""A property test: any interleaving of requests, duplicates, concurrent requests, retries and crashes on one
conversation leaves a provider-valid history and runs every tool call once."""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autogen_core.models import LLMMessage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatledger.adapters.agentchat import Session, chatledger_agent
from chatledger.adapters.scripted import ScriptedChatCompletionClient, call, current_prompt
from chatledger.store import Store, current_idempotency_key, open_store
from chatledger.store.validity import is_provider_valid

LEASE = 0.3
CONV = "conv"


class Crash(RuntimeError):
    """The worker dies here (its lease is left to expire)."""


class DyingSession(Session):
    """A session whose worker dies on a crash: it stops renewing its turn but never releases it."""

    def _release(self, halt: Any) -> None:
        if halt is not None:
            halt()
        self._turn = None


MODEL_CALLS: Counter[str] = Counter()


def script(crash_at: int | None) -> Any:
    """``weather X``: a tool call, then the answer; raises Crash at model call number ``crash_at``."""
    calls = Counter[str]()

    def reply(messages: Sequence[LLMMessage]) -> Any:
        prompt, step = current_prompt(messages)
        calls["n"] += 1
        MODEL_CALLS["all"] += 1
        if crash_at is not None and calls["n"] == crash_at:
            raise Crash(f"killed at model call {crash_at}")
        city = prompt.split()[1]
        return call("get_weather", city=city) if step == 0 else f"It is sunny in {city}."

    return reply


async def deliver(store: Store, runs: Counter[str], k: int, crash_at: int | None = None) -> str | None:
    """One delivery of request ``m{k}``; None when its worker crashed."""

    def get_weather(city: str) -> str:
        """The weather in a city."""
        runs[current_idempotency_key() or "no key"] += 1
        return f"sunny in {city}"

    session_class = DyingSession if crash_at is not None else Session
    session = session_class(store, CONV, request_id=f"m{k}", lease_seconds=LEASE, wait_seconds=30)
    agent = chatledger_agent(
        session,
        name="assistant",
        model_client=ScriptedChatCompletionClient(script(crash_at), delay=0.01),
        tools=[get_weather],
        reflect_on_tool_use=True,
    )
    try:
        result = await agent.run(task=f"weather city{k}")
    except Crash:
        return None
    return result.messages[-1].to_text()


operation = st.one_of(
    st.tuples(st.just("request"), st.integers(0, 3)),
    st.tuples(st.just("duplicates"), st.integers(0, 3), st.integers(2, 4)),
    st.tuples(st.just("concurrent"), st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.just("crash"), st.integers(0, 3), st.sampled_from([1, 2])),
)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(operation, min_size=1, max_size=5))
def test_any_interleaving_keeps_the_history_valid_and_each_call_run_once(ops: list[tuple[Any, ...]]) -> None:
    """After every step: the stored history obeys the provider rule, every tool call ran at most once (exactly
    once when its request finished), every finished delivery of a request got the same answer, and concurrent
    duplicates cost at most one request's model calls."""
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'chat.db'}")
        store.start_conversation(CONV)
        runs: Counter[str] = Counter()
        answers: dict[int, set[str]] = {}

        async def step(op: tuple[Any, ...]) -> None:
            kind = op[0]
            if kind == "request":
                outs = [(op[1], await deliver(store, runs, op[1]))]
            elif kind == "duplicates":
                before = MODEL_CALLS["all"]
                got = await asyncio.gather(*(deliver(store, runs, op[1]) for _ in range(op[2])))
                outs = [(op[1], a) for a in got]
                assert MODEL_CALLS["all"] - before <= 2, "duplicates cost more model calls than one request"
            elif kind == "concurrent":
                got = await asyncio.gather(deliver(store, runs, op[1]), deliver(store, runs, op[2]))
                outs = [(op[1], got[0]), (op[2], got[1])]
            else:
                outs = [(op[1], await deliver(store, runs, op[1], crash_at=op[2]))]
            for k, answer in outs:
                if answer is not None:
                    answers.setdefault(k, set()).add(answer)

        try:
            for op in ops:
                asyncio.run(step(op))
                messages = store.messages(CONV)
                assert is_provider_valid(messages), (op, [m["role"] for m in messages])
                assert all(n == 1 for n in runs.values()), runs
                assert all(len(a) == 1 for a in answers.values()), answers
                answered = {m["tool_call_id"] for m in messages if m["role"] == "tool"}
                assert {key.split("/", 1)[1] for key in runs} >= answered
        finally:
            store.close()
