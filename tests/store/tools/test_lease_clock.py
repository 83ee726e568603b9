"""Leases measured by an injected clock: renewal never races the outcome, whatever the lease length."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatledger.store import Executor, Store, ToolCallSucceeded, ToolRegistry
from chatledger.store.clock import ManualClock
from chatledger.store.tools.ledger import ToolCallLeaseRenewed, load_call

from .checks import assert_model_ready, assistant, call

PLANS = st.lists(
    st.tuples(st.booleans(), st.lists(st.floats(0.0, 2.0, allow_nan=False), max_size=4)),
    min_size=1,
    max_size=4,
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lease=st.floats(0.001, 5.0, allow_nan=False),
    plan=PLANS,
    in_async=st.booleans(),
)
def test_without_a_crash_every_call_succeeds_and_runs_once(
    store: Store, lease: float, plan: list[tuple[bool, list[float]]], in_async: bool
) -> None:
    """With no crash, any lease (down to a millisecond) and tools that run for any number of leases,
    every call succeeds with its tool's own result and runs once, idempotent or not: the executor's
    renewals of a lease never conflict with the outcome it records."""
    clock = ManualClock()
    runs: Counter[str] = Counter()
    tools = ToolRegistry()

    def work(tag: str, pauses: list[float]) -> str:
        runs[tag] += 1
        for pause in pauses:
            clock.sleep(pause * lease)  # simulated time: renewals come due while the tool runs
        return f"done {tag}"

    tools.register(work, name="work")
    tools.register(work, name="work_idempotent", idempotent=True)
    executor = Executor(store, tools, lease_seconds=lease, clock=clock)
    conv = store.start_conversation(messages=[{"role": "user", "content": "work"}])
    calls = [
        call(f"c{i}", "work_idempotent" if idempotent else "work", {"tag": f"c{i}", "pauses": pauses})
        for i, (idempotent, pauses) in enumerate(plan)
    ]
    message = assistant(*calls)
    results = asyncio.run(executor.aexecute(conv, message)) if in_async else executor.execute(conv, message)
    assert results == [{"role": "tool", "tool_call_id": f"c{i}", "content": f"done c{i}"} for i in range(len(plan))]
    assert runs == Counter({f"c{i}": 1 for i in range(len(plan))})
    for i in range(len(plan)):
        state = load_call(store, conv, f"c{i}")
        assert state is not None and state.status == "succeeded" and state.attempt == 1
    assert_model_ready(store.history(conv))


def test_a_lease_on_a_manual_clock_is_renewed_while_the_tool_runs(store: Store) -> None:
    """A lease measured by a manual clock is renewed as soon as the clock passes a third of it while the
    tool runs, with no real time passing, and the tool's result is recorded once."""
    clock = ManualClock()
    tools = ToolRegistry()
    conv = store.start_conversation(messages=[{"role": "user", "content": "go"}])

    def renewals() -> int:
        return sum(isinstance(e, ToolCallLeaseRenewed) for e in store.read_all())

    @tools.register
    def patient() -> str:
        clock.sleep(40.0)  # a third of the lease and more: the renewal comes due
        deadline = time.monotonic() + 60
        while renewals() == 0:
            assert time.monotonic() < deadline, "the lease was never renewed"
            time.sleep(0.005)
        return "ok"

    executor = Executor(store, tools, lease_seconds=100.0, clock=clock)
    assert executor.execute_call(conv, "p1", "patient", "{}").content == "ok"
    state = load_call(store, conv, "p1")
    assert state is not None and state.status == "succeeded" and renewals() >= 1
    assert sum(isinstance(e, ToolCallSucceeded) for e in store.read_all()) == 1
