"""Property: any interleaving of deliveries, retries, worker steps and crashes keeps the ledger sound."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st

from chatledger.store import (
    Executor,
    LeaseLost,
    PendingToolCallsError,
    Store,
    ToolCallFailed,
    ToolCallOutcomeUnknown,
    ToolCallSucceeded,
    ToolRegistry,
    current_idempotency_key,
    open_store,
)
from chatledger.store.tools.ledger import Claim, claim_call, final_draft, load_call, record_outcome

from .checks import assert_model_ready, assistant, call

TURNS = [
    assistant(call("t0-a", "idem", {"n": 0}), call("t0-b", "plain", {"n": 1})),
    assistant(call("t1-a", "flaky", {"n": 2})),
    assistant(call("t2-a", "plain", {"n": 3}), call("t2-b", "idem", {"n": 4})),
]
CALLS = [
    (k, c["id"], c["function"]["name"], c["function"]["arguments"])
    for k, t in enumerate(TURNS)
    for c in t["tool_calls"]
]
OPS = ["deliver", "deliver", "work", "work", "submit", "crash", "crash_after_run", "crash_after_run", "late", "close"]

ops = st.lists(
    st.tuples(
        # Weighted towards crashes followed by deliveries and worker steps, where the hard cases live.
        st.sampled_from(OPS),
        st.integers(0, len(CALLS) - 1),
    ),
    max_size=14,
)


class World:
    """One conversation, counting tools, and the claims of workers that 'crashed'."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.runs: Counter[str] = Counter()
        self.flaky_calls = 0
        reg = ToolRegistry()
        reg.register(self.tool, name="idem", idempotent=True)
        reg.register(self.tool, name="plain")
        reg.register(self.flaky, name="flaky", idempotent=True)
        self.registry = reg
        self.executor = Executor(store, reg, worker_id="live", max_attempts=2)
        self.crashed: list[Claim] = []
        self.conv = store.start_conversation(messages=[{"role": "user", "content": "go"}])

    def tool(self, n: int) -> str:
        self.runs[str(current_idempotency_key())] += 1
        return f"r{n}"

    def flaky(self, n: int) -> str:
        self.runs[str(current_idempotency_key())] += 1
        self.flaky_calls += 1
        if self.flaky_calls % 2 == 1:
            raise RuntimeError("flaky")
        return f"r{n}"

    def apply(self, op: str, index: int) -> None:
        turn, call_id, _, _ = CALLS[index]
        ex, conv = self.executor, self.conv
        try:
            if op == "deliver":
                ex.execute(conv, TURNS[turn])
            elif op == "submit":
                ex.submit(conv, TURNS[turn])
            elif op == "work":
                ex.work_on(conv, call_id)
            elif op in {"crash", "crash_after_run"}:
                if load_call(self.store, conv, call_id) is None:
                    ex.submit(conv, TURNS[turn])  # a worker can only crash on a call that was queued
                state = load_call(self.store, conv, call_id)
                if state is None or state.final or (state.status == "claimed" and not state.idempotent):
                    return
                claim = claim_call(self.store, state, "doomed", 0.0001, time.time())
                if claim is not None:
                    self.crashed.append(claim)
                    if op == "crash_after_run":
                        self.runs[claim.idempotency_key] += 1  # the side effect happened, the record did not
            elif op == "late" and self.crashed:
                claim = self.crashed[index % len(self.crashed)]
                payload = {
                    "tool_call_id": claim.tool_call_id,
                    "worker_id": "doomed",
                    "attempt": claim.attempt,
                    "result": "late",
                    "duration_ms": 1.0,
                }
                try:
                    with self.store.transaction() as w:
                        record_outcome(
                            w,
                            claim,
                            final_draft("succeeded", payload),
                            "succeeded",
                            expected_version=claim.version,
                            content="late",
                            append_result=True,
                        )
                except LeaseLost:
                    pass
            elif op == "close":
                ex.close_pending(conv)
        except PendingToolCallsError:
            pass  # a later turn while earlier calls are unanswered is refused: that is correct

    def check(self) -> None:
        finals: Counter[str] = Counter()
        wins: Counter[str] = Counter()
        for event in self.store.read_all():
            final = isinstance(event, ToolCallSucceeded | ToolCallOutcomeUnknown) or (
                isinstance(event, ToolCallFailed) and event.final
            )
            finals[event.stream_id] += final
            wins[event.stream_id] += isinstance(event, ToolCallSucceeded)
        assert max(wins.values(), default=0) <= 1
        assert max(finals.values(), default=0) <= 1
        for _, call_id, name, _ in CALLS:
            if name == "plain":
                assert self.runs[f"{self.conv}/{call_id}"] <= 1, "a non-idempotent tool ran twice"
        messages = self.store.messages(self.conv)
        results = Counter(m["tool_call_id"] for m in messages if m["role"] == "tool")
        assert max(results.values(), default=0) <= 1
        assistants = Counter(c["id"] for m in messages for c in (m.get("tool_calls") or []))
        assert max(assistants.values(), default=0) <= 1


@pytest.mark.parametrize("backend_name", ["memory", "sqlite"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=ops)
def test_any_interleaving_keeps_one_outcome_per_call_and_a_valid_history(
    backend_name: str, script: list[tuple[str, int]]
) -> None:
    """Deliveries, retries, worker steps, crashes and late completions never yield two outcomes for a call.

    After close_pending (what a server does after a crash) the history is one model APIs accept.
    """
    tmp = tempfile.mkdtemp()
    url = "memory://" if backend_name == "memory" else f"sqlite:///{tmp}/p.db"
    store = open_store(url)
    try:
        world = World(store)
        for op, index in script:
            world.apply(op, index)
            world.check()
        closed = world.executor.close_pending(world.conv)
        note_event(f"closed {len(closed)} dangling calls; {len(world.crashed)} crashed claims")
        world.check()
        history: list[dict[str, Any]] = store.history(world.conv)
        assert_model_ready(history)
        # Finishing the whole script afterwards still runs nothing twice.
        for turn in TURNS:
            try:
                world.executor.execute(world.conv, turn)
            except PendingToolCallsError:
                pytest.fail("no call is pending after close_pending and execute")
        world.check()
        assert_model_ready(store.history(world.conv))
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)
