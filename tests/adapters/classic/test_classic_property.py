"""A property of classic turns: any interleaving of requests, duplicates, failures and retries keeps the invariants.

Hypothesis draws a sequence of steps on one conversation (SQLite file): a new request,
a redelivery of an earlier one (a duplicate, or the retry of one that failed), a request
whose model fails after its tool ran, and bursts of several of these at once in threads.
After every step the stored history obeys the provider rule, every tool call has exactly
one result, no tool ran twice, and redelivering a finished request costs no model call.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatledger.adapters.classic import chatledger_pair
from chatledger.store import Store, open_store
from chatledger.store.validity import provider_violations

from .fakes import LLM_CONFIG, ScriptedModelClient, model_calls, runs, weather_tool

pytest.importorskip("autogen")

Step = tuple[str, int]
steps = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["new", "fail", "again"]), st.integers(0, 5)),
        st.lists(st.tuples(st.sampled_from(["new", "again"]), st.integers(0, 5)), min_size=2, max_size=4).map(
            lambda burst: ("burst", burst)
        ),
    ),
    min_size=1,
    max_size=6,
)


class Conversation:
    """One conversation and what its requests did, checked against the invariants."""

    def __init__(self, store: Store, folder: Path) -> None:
        self.store, self.folder = store, folder
        self.requests: list[str] = []  # request ids, in the order they were first sent
        self.finished: set[str] = set()
        self.failed: set[str] = set()
        self.lock = threading.Lock()

    def send(self, request: str, fail: bool = False) -> None:
        assistant, user = chatledger_pair(
            self.store,
            "c1",
            llm_config=LLM_CONFIG,
            tools=[weather_tool(self.folder / "effects")],
            model_client=ScriptedModelClient,
            model_client_kwargs={"calls_file": str(self.folder / "calls"), "fail_after_tool": int(fail)},
            request_id=request,
        )
        try:
            chat = user.initiate_chat(assistant, message=f"Weather in {request}?", clear_history=False, silent=True)
        except ConnectionError:
            assert fail
            with self.lock:
                self.failed.add(request)
            return
        assert chat.summary == f"Forecast: sunny in {request}"
        with self.lock:
            self.finished.add(request)

    def pick(self, kind: str, n: int) -> str:
        with self.lock:
            if kind == "again" and self.requests:
                return self.requests[n % len(self.requests)]
            request = f"R{len(self.requests)}"
            self.requests.append(request)
            return request

    def step(self, step: Any) -> None:
        kind, arg = step
        if kind == "burst":
            picks = [self.pick(k, n) for k, n in arg]
            threads = [threading.Thread(target=self.send, args=(r,)) for r in picks]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        else:
            self.send(self.pick(kind, arg), fail=kind == "fail")

    def check(self) -> None:
        stored = self.store.messages("c1")
        assert provider_violations(stored) == []
        calls = [c["id"] for m in stored for c in m.get("tool_calls") or []]
        assert sorted(m["tool_call_id"] for m in stored if m["role"] == "tool") == sorted(calls)
        done = runs(self.folder / "effects")
        assert len(done) == len(set(done))  # no tool ran twice
        assert self.finished <= set(done)
        before = model_calls(self.folder / "calls")
        # two model calls per request, one more for a failed request's retry; duplicates cost none
        assert before == 2 * len(self.requests) + len(self.failed & self.finished)
        for request in sorted(self.finished)[:1]:
            self.send(request)  # a redelivery of a finished request
        assert model_calls(self.folder / "calls") == before


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_any_interleaving_of_requests_duplicates_failures_and_retries_keeps_the_history_valid(
    plan: list[Any],
) -> None:
    """After every step of any plan: provider-valid history, one result per call, no tool run twice, duplicates
    cost no model call."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with open_store(f"sqlite:///{folder / 'chat.db'}") as store:
            conversation = Conversation(store, folder)
            for step in plan:
                conversation.step(step)
                conversation.check()
