"""The executor's guarantees, on every backend (memory, SQLite file, PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

from chatledger.store import (
    ConflictError,
    Executor,
    LeaseLost,
    PendingToolCallsError,
    ReplayDivergence,
    Store,
    ToolCallOutcomeUnknown,
    ToolRegistry,
    ValidationError,
    current_idempotency_key,
    fork,
    tool,
    tool_result_message_id,
)
from chatledger.store.clock import ManualClock
from chatledger.store.tools.ledger import claim_call, final_draft, load_call, record_outcome, renew_lease

from .checks import assert_model_ready, assistant, call, successes


class Counter:
    """Tools that count their runs in memory."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, str | None]] = []
        self.registry = ToolRegistry()
        self.registry.register(self.add, name="add")
        self.registry.register(self.add, name="add_idem", idempotent=True)

    def add(self, a: int, b: int) -> int:
        self.runs.append(("add", current_idempotency_key()))
        return a + b


@pytest.fixture
def counter() -> Counter:
    """Counting tools."""
    return Counter()


def start(store: Store) -> str:
    """A conversation with one user message."""
    return store.start_conversation(messages=[{"role": "user", "content": "add things"}])


def test_duplicate_delivery_runs_each_tool_once(store: Store, counter: Counter) -> None:
    """The same assistant message delivered twice runs its tools once and gets the recorded results."""
    conv = start(store)
    msg = assistant(call("c1", "add", {"a": 1, "b": 2}), call("c2", "add", {"a": 3, "b": 4}))
    first = Executor(store, counter.registry).execute(conv, msg)
    second = Executor(store, counter.registry).execute(conv, msg)
    assert (
        first
        == second
        == [
            {"role": "tool", "tool_call_id": "c1", "content": "3"},
            {"role": "tool", "tool_call_id": "c2", "content": "7"},
        ]
    )
    assert len(counter.runs) == 2
    history = store.history(conv)
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "tool"]
    assert_model_ready(history)


def test_retry_wrapper_reprocessing_tool_calls_runs_them_once(store: Store, counter: Counter) -> None:
    """A retry wrapper that re-processes the last message's tool calls after an exception gets recorded results."""
    conv = start(store)
    store.append(conv, [assistant(call("c1", "add", {"a": 1, "b": 1}), call("c2", "add", {"a": 2, "b": 1}))])
    attempts = 0

    def process_last_message() -> list[dict[str, Any]]:
        nonlocal attempts
        attempts += 1
        last = [m for m in store.messages(conv) if m["role"] == "assistant"][-1]
        results = Executor(store, counter.registry).execute(conv, last)
        if attempts < 3:
            raise TimeoutError("the model call after the tools timed out")
        return results

    results: list[dict[str, Any]] = []
    for _ in range(3):
        try:
            results = process_last_message()
            break
        except TimeoutError:
            continue
    assert attempts == 3
    assert [r["content"] for r in results] == ["2", "3"]
    assert len(counter.runs) == 2
    history = store.history(conv)
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "tool"]
    assert_model_ready(history)


def test_double_append_then_execute_keeps_one_call_and_one_result(store: Store, counter: Counter) -> None:
    """An assistant message appended twice by the caller and executed twice yields one message and one result."""
    conv = start(store)
    msg = assistant(call("c1", "add", {"a": 2, "b": 2}))
    store.append(conv, [msg], message_ids=["m-1"])
    store.append(conv, [msg], message_ids=["m-1"])
    ex = Executor(store, counter.registry)
    ex.execute(conv, msg)
    ex.execute(conv, msg)
    history = store.history(conv)
    assert [m["role"] for m in history] == ["user", "assistant", "tool"]
    assert len(counter.runs) == 1
    assert_model_ready(history)


@pytest.mark.parametrize(
    "chunk",
    [
        {"role": "assistant", "delta": {"tool_calls": []}},
        {"object": "chat.completion.chunk", "role": "assistant", "tool_calls": []},
        {"role": "assistant", "partial": True, "tool_calls": [call("c1", "add", {"a": 1, "b": 1})]},
        {
            "role": "assistant",
            "tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "add", "arguments": ""}}],
        },
        {"role": "user", "content": "not an assistant"},
    ],
)
def test_streaming_chunks_never_execute(store: Store, counter: Counter, chunk: dict[str, Any]) -> None:
    """A streaming delta or partial message is refused with ValidationError and writes nothing."""
    conv = start(store)
    before = store.last_position()
    ex = Executor(store, counter.registry)
    with pytest.raises(ValidationError):
        ex.execute(conv, chunk)
    with pytest.raises(ValidationError):
        ex.submit(conv, chunk)
    assert store.last_position() == before
    assert counter.runs == []


def test_chunks_then_final_message_execute_once(store: Store, counter: Counter) -> None:
    """Handing the executor both the chunks and the final message runs the tool once, from the final message."""
    conv = start(store)
    chunks = [
        {
            "role": "assistant",
            "tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "add", "arguments": ""}}],
        },
        {"role": "assistant", "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 5,'}}]}},
    ]
    ex = Executor(store, counter.registry)
    for chunk in chunks:
        with pytest.raises(ValidationError):
            ex.execute(conv, chunk)
    assert ex.execute(conv, assistant(call("c1", "add", {"a": 5, "b": 5}))) == [
        {"role": "tool", "tool_call_id": "c1", "content": "10"}
    ]
    assert len(counter.runs) == 1


def test_same_call_id_with_other_arguments_conflicts(store: Store, counter: Counter) -> None:
    """A tool_call_id arriving again with different arguments or name is a ConflictError and writes nothing."""
    conv = start(store)
    ex = Executor(store, counter.registry)
    ex.execute(conv, assistant(call("c1", "add", {"a": 1, "b": 2})))
    before = store.last_position()
    with pytest.raises(ConflictError):
        ex.execute_call(conv, "c1", "add", '{"a": 9, "b": 9}')
    with pytest.raises(ConflictError):
        ex.execute_call(conv, "c1", "add_idem", '{"a": 1, "b": 2}')
    assert store.last_position() == before
    assert len(counter.runs) == 1


def test_unknown_tool_and_invalid_arguments_are_recorded_failures(store: Store) -> None:
    """Unknown tools and arguments that fail validation are recorded as failed; the model sees the error."""

    class Weather(BaseModel):
        city: str
        days: int = 1

    ran: list[str] = []

    @tool(schema=Weather)
    def weather(city: str, days: int) -> str:
        ran.append(city)
        return f"sunny in {city} for {days}"

    def lookup(term: str) -> str:
        ran.append(term)
        return term

    reg = ToolRegistry([weather])
    reg.register(
        lookup,
        schema={
            "type": "object",
            "required": ["term"],
            "properties": {"term": {"type": "string"}},
            "additionalProperties": False,
        },
    )
    conv = start(store)
    msg = assistant(
        call("c1", "missing", {}),
        call("c2", "weather", {"city": 3}),
        call("c3", "weather", "{not json"),
        call("c4", "lookup", {"term": "x", "extra": 1}),
        call("c5", "weather", {"city": "Rome"}),
    )
    results = Executor(store, reg).execute(conv, msg)
    contents = [r["content"] for r in results]
    assert contents[0].startswith("Error: unknown tool 'missing'")
    assert "city" in contents[1] and contents[1].startswith("Error: invalid arguments")
    assert "not valid JSON" in contents[2]
    assert "extra" in contents[3]
    assert contents[4] == "sunny in Rome for 1"
    assert ran == ["Rome"]
    states = [load_call(store, conv, f"c{i}") for i in range(1, 6)]
    assert [s.status for s in states if s] == ["failed"] * 4 + ["succeeded"]
    assert_model_ready(store.history(conv))


def test_retries_record_the_final_error_or_the_success(store: Store) -> None:
    """A raising tool is retried up to max_attempts with backoff; the final error or result is recorded."""
    failures = {"flaky": 2, "broken": 99}
    ran: dict[str, int] = {}

    def flaky() -> str:
        ran["flaky"] = ran.get("flaky", 0) + 1
        if ran["flaky"] <= failures["flaky"]:
            raise RuntimeError(f"flake {ran['flaky']}")
        return "finally"

    def broken() -> str:
        ran["broken"] = ran.get("broken", 0) + 1
        raise RuntimeError("always")

    conv = start(store)
    ex = Executor(store, [flaky, broken], max_attempts=3, backoff_seconds=0.02)
    t0 = time.monotonic()
    out = ex.execute(conv, assistant(call("c1", "flaky", {}), call("c2", "broken", {})))
    assert time.monotonic() - t0 >= 0.02 + 0.04
    assert out[0]["content"] == "finally"
    assert out[1]["content"] == "Error: RuntimeError: always"
    assert ran == {"flaky": 3, "broken": 3}
    assert load_call(store, conv, "c1").attempt == 3  # type: ignore[union-attr]
    broken_state = load_call(store, conv, "c2")
    assert broken_state is not None and broken_state.status == "failed" and broken_state.attempt == 3
    assert ex.execute(conv, assistant(call("c1", "flaky", {}), call("c2", "broken", {}))) == out
    assert ran == {"flaky": 3, "broken": 3}


def test_idempotency_key_is_exposed_while_a_tool_runs(store: Store, counter: Counter) -> None:
    """A running tool sees f'{conversation_id}/{tool_call_id}' as its idempotency key; outside it is None."""
    conv = start(store)
    Executor(store, counter.registry).execute(conv, assistant(call("k1", "add", {"a": 0, "b": 0})))
    assert counter.runs == [("add", f"{conv}/k1")]
    assert current_idempotency_key() is None


def test_a_holder_whose_lease_was_taken_over_gets_lease_lost(store: Store, counter: Counter) -> None:
    """After an expired lease is re-claimed, the old holder's result is refused with LeaseLost and discarded."""
    conv = start(store)
    ex = Executor(store, counter.registry, worker_id="w1")
    ex.submit(conv, assistant(call("c1", "add_idem", {"a": 1, "b": 1})))
    state = load_call(store, conv, "c1")
    assert state is not None
    old = claim_call(store, state, "w-old", 0.05, time.time())
    assert old is not None
    assert claim_call(store, state, "w-race", 30, time.time()) is None  # same version: only one wins
    time.sleep(0.1)
    outcome = ex.execute_call(conv, "c1", "add_idem", '{"a": 1, "b": 1}')
    assert outcome.content == "2" and not outcome.from_record
    with pytest.raises(LeaseLost):
        renew_lease(store, old, 30, time.time())
    payload = {"tool_call_id": "c1", "worker_id": "w-old", "attempt": 1, "result": "stale", "duration_ms": 1.0}
    with pytest.raises(LeaseLost), store.transaction() as w:
        record_outcome(
            w,
            old,
            final_draft("succeeded", payload),
            "succeeded",
            expected_version=old.version,
            content="stale",
            append_result=True,
        )
    assert [m["content"] for m in store.history(conv) if m["role"] == "tool"] == ["2"]
    assert sum(successes(store).values()) == 1


def test_expired_lease_on_a_non_idempotent_tool_becomes_outcome_unknown(store: Store, counter: Counter) -> None:
    """A non-idempotent call whose holder vanished is marked outcome-unknown, never re-run, and the model is told."""
    conv = start(store)
    ex = Executor(store, counter.registry)
    ex.submit(conv, assistant(call("c1", "add", {"a": 1, "b": 1})))
    state = load_call(store, conv, "c1")
    assert state is not None
    assert claim_call(store, state, "w-crashed", 0.01, time.time()) is not None
    time.sleep(0.05)
    outcome = ex.execute_call(conv, "c1", "add", '{"a": 1, "b": 1}')
    assert outcome.status == "outcome_unknown" and outcome.is_error
    assert "unknown" in outcome.content
    assert counter.runs == []
    assert ex.execute_call(conv, "c1", "add", '{"a": 1, "b": 1}').from_record
    assert counter.runs == []
    assert_model_ready(store.history(conv))


def test_close_pending_answers_dangling_calls(store: Store, counter: Counter) -> None:
    """close_pending answers never-run calls and calls whose holder died (its lease ran out) so history()
    no longer raises; late holders lose."""
    conv = start(store)
    clock = ManualClock(time.time())
    ex = Executor(store, counter.registry, clock=clock)
    store.append(
        conv,
        [
            assistant(
                call("a", "add", {"a": 1, "b": 1}),
                call("b", "add", {"a": 2, "b": 2}),
                call("c", "add", {"a": 3, "b": 3}),
            )
        ],
    )
    ex.execute_call(conv, "a", "add", '{"a": 1, "b": 1}', append_result=False)
    ex.submit(conv, store.messages(conv)[-1])
    state = load_call(store, conv, "b")
    assert state is not None
    held = claim_call(store, state, "w-held", 30, time.time())
    assert held is not None
    with pytest.raises(PendingToolCallsError):
        store.history(conv)
    clock.advance(31)  # the holder died: nobody renews its 30 s lease
    answers = ex.close_pending(conv, reason="interrupted by the user")
    assert [a["tool_call_id"] for a in answers] == ["a", "b", "c"]
    assert answers[0]["content"] == "2"
    assert "unknown" in answers[1]["content"] and "not run" in answers[2]["content"]
    assert_model_ready(store.history(conv))
    with pytest.raises(LeaseLost), store.transaction() as w:
        payload = {"tool_call_id": "b", "worker_id": "w-held", "attempt": 1, "result": "late", "duration_ms": 1.0}
        record_outcome(
            w,
            held,
            final_draft("succeeded", payload),
            "succeeded",
            expected_version=held.version,
            content="late",
            append_result=True,
        )
    assert ex.close_pending(conv) == []
    assert len(counter.runs) == 1


def test_a_new_turn_is_refused_while_calls_are_unanswered(store: Store, counter: Counter) -> None:
    """Submitting a new assistant message while earlier calls lack results raises PendingToolCallsError."""
    conv = start(store)
    ex = Executor(store, counter.registry)
    ex.submit(conv, assistant(call("c1", "add", {"a": 1, "b": 1})))
    before = store.last_position()
    with pytest.raises(PendingToolCallsError):
        ex.submit(conv, assistant(call("c2", "add", {"a": 1, "b": 1})))
    assert store.last_position() == before


def test_replay_calls_no_tool_function(store: Store, counter: Counter) -> None:
    """Replay returns recorded outcomes without calling any tool, and diverges on an unrecorded call."""
    conv = start(store)
    msg = assistant(call("c1", "add", {"a": 1, "b": 2}), call("c2", "add", {"a": 5, "b": 5}))
    live = Executor(store, counter.registry).execute(conv, msg)

    def explode(**kwargs: Any) -> str:
        raise AssertionError("replay must not call a tool")

    replayer = Executor(store, {"add": explode}, replay=True)
    before = store.last_position()
    assert replayer.execute(conv, msg) == live
    assert store.last_position() == before
    outcome = replayer.execute_call(conv, "c1", "add", '{"a": 1, "b": 2}')
    assert outcome.from_record and outcome.content == "3"
    with pytest.raises(ReplayDivergence) as info:
        replayer.execute_call(conv, "c9", "add", '{"a": 0, "b": 0}')
    assert info.value.position == store.version(conv)
    assert info.value.expected is None and info.value.actual["tool_call_id"] == "c9"
    with pytest.raises(ReplayDivergence) as info:
        replayer.execute_call(conv, "c1", "add", '{"a": 7, "b": 2}')
    assert info.value.expected["arguments"] == '{"a": 1, "b": 2}'


def test_fork_keeps_recorded_outcomes_before_the_fork_point(store: Store, counter: Counter) -> None:
    """A fork holds the messages up to its version and the answered calls' outcomes; they do not run again."""
    conv = start(store)
    ex = Executor(store, counter.registry)
    first = assistant(call("c1", "add", {"a": 1, "b": 1}))
    ex.execute(conv, first)
    cut = store.version(conv)
    store.append(conv, [{"role": "assistant", "content": "2"}, {"role": "user", "content": "more"}])
    ex.execute(conv, assistant(call("c2", "add", {"a": 2, "b": 2})))
    forked = fork(store, conv, cut)
    assert store.events(forked)[0].forked_from == {"conversation_id": conv, "version": cut}  # type: ignore[attr-defined]
    assert store.messages(forked) == store.messages(conv, as_of=cut)
    again = Executor(store, counter.registry).execute_call(forked, "c1", "add", '{"a": 1, "b": 1}')
    assert again.from_record and again.content == "2"
    assert load_call(store, forked, "c2") is None
    assert len(counter.runs) == 2
    with pytest.raises(ValidationError):
        fork(store, conv, 0)


def test_async_execution_awaits_async_tools_once(store: Store) -> None:
    """aexecute awaits async tools (seeing the idempotency key) and returns recorded results on re-delivery."""
    seen: list[str | None] = []

    async def fetch(url: str) -> dict[str, str]:
        await asyncio.sleep(0)
        seen.append(current_idempotency_key())
        return {"url": url, "status": "200"}

    def local(x: int) -> int:
        seen.append(current_idempotency_key())
        return x * 2

    conv = start(store)
    ex = Executor(store, [fetch, local])
    msg = assistant(call("c1", "fetch", {"url": "u"}), call("c2", "local", {"x": 4}))
    out = asyncio.run(ex.aexecute(conv, msg))
    assert out[0]["content"] == '{"url": "u", "status": "200"}' and out[1]["content"] == "8"
    assert asyncio.run(ex.aexecute(conv, msg)) == out
    assert ex.execute(conv, msg) == out
    assert seen == [f"{conv}/c1", f"{conv}/c2"]


def test_execute_call_without_appending_leaves_the_message_to_the_adapter(store: Store, counter: Counter) -> None:
    """append_result=False records the outcome only; an adapter-appended result is never duplicated later."""
    conv = start(store)
    msg = assistant(call("c1", "add", {"a": 4, "b": 4}))
    store.append(conv, [msg])
    ex = Executor(store, counter.registry)
    outcome = ex.execute_call(conv, "c1", "add", '{"a": 4, "b": 4}', append_result=False)
    assert [m["role"] for m in store.messages(conv)] == ["user", "assistant"]
    store.append(conv, [{"role": "tool", "tool_call_id": "c1", "content": outcome.content}], message_ids=["own"])
    ex.execute(conv, msg)
    assert [m["role"] for m in store.messages(conv)] == ["user", "assistant", "tool"]
    assert tool_result_message_id("c1") == "tool-result:c1"
    assert len(counter.runs) == 1


def test_tool_names_and_registry_options(make_store: Callable[..., Store]) -> None:
    """Registries take lists, mappings and decorators; a name taken by another callable is refused."""
    reg = ToolRegistry()

    @reg.register(name="x", idempotent=True)
    def one() -> int:
        return 1

    def two() -> int:
        return 2

    with pytest.raises(ValidationError):
        reg.register(two, name="x")
    assert reg.names() == ["x"] and reg.get("x") is not None and reg.get("x").idempotent  # type: ignore[union-attr]
    store = make_store()
    conv = start(store)
    assert Executor(store, {"two": two}).execute_call(conv, "t", "two", "{}").content == "2"
    with pytest.raises(ValidationError):
        Executor(store, reg, max_attempts=0)
    outcome = Executor(store, reg).execute_call(conv, "u", "x", "{}")
    assert outcome.status == "succeeded"
    assert isinstance(ToolCallOutcomeUnknown.TYPE, str)


def test_a_running_tool_keeps_its_lease_by_renewal(store: Store) -> None:
    """A tool running longer than its lease renews it, so no other worker takes the call over meanwhile.

    The lease is a second (renewed every third of it): shorter ones make the test depend on
    how busy the machine is.
    """
    import threading

    ran: list[str] = []
    started = threading.Event()

    def slow() -> str:
        ran.append("slow")
        started.set()
        time.sleep(2.5)
        return "finished"

    conv = start(store)
    ex = Executor(store, [slow], lease_seconds=1.0, worker_id="holder")
    ex.submit(conv, assistant(call("c1", "slow", {})))
    result: list[Any] = []
    runner = threading.Thread(target=lambda: result.append(ex.execute_call(conv, "c1", "slow", "{}")))
    runner.start()
    assert started.wait(10)
    rival = Executor(store, [slow], lease_seconds=1.0, worker_id="rival")
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert rival.work_on(conv, "c1") is None
        time.sleep(0.05)
    runner.join(10)
    assert result[0].content == "finished" and not result[0].from_record
    assert ran == ["slow"]
    renewals = [
        e
        for e in store.stream_events(load_call(store, conv, "c1").stream_id)  # type: ignore[union-attr]
        if e.TYPE == "tool_call.lease_renewed"
    ]
    assert renewals


def test_threads_racing_on_a_new_call_run_it_once(make_store: Callable[..., Store]) -> None:
    """Threads delivering the same new message at once (own store handles) run each tool once, no errors."""
    import threading

    counter = Counter()
    conv = start(make_store())
    msg = assistant(call("r1", "add", {"a": 1, "b": 1}), call("r2", "add_idem", {"a": 2, "b": 2}))
    stores = [make_store() for _ in range(6)]
    gate = threading.Barrier(len(stores))
    results: list[Any] = []
    errors: list[BaseException] = []

    def deliver(s: Store) -> None:
        gate.wait()
        try:
            results.append(Executor(s, counter.registry).execute(conv, msg))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deliver, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert all(r == results[0] for r in results) and len(results) == len(stores)
    assert len(counter.runs) == 2
    assert_model_ready(stores[0].history(conv))


def test_reserialized_arguments_are_the_same_call(store: Store) -> None:
    """The same call with its JSON arguments re-serialized (key order, spacing) gets the recorded outcome."""
    runs: list[str] = []

    def clock(city: str, tz: str) -> str:
        runs.append(city)
        return f"noon in {city}"

    conv = store.start_conversation()
    store.append(conv, [{"role": "user", "content": "time?"}])
    executor = Executor(store, [clock])
    first = executor.execute_call(conv, "c1", "clock", '{"city": "Paris", "tz": "CET"}')
    again = executor.execute_call(conv, "c1", "clock", '{"tz":"CET","city":"Paris"}')
    assert runs == ["Paris"] and again.content == first.content and again.from_record
    replayed = Executor(store, [clock], replay=True).execute_call(conv, "c1", "clock", '{"tz": "CET", "city": "Paris"}')
    assert replayed.content == "noon in Paris"
    with pytest.raises(ConflictError):
        executor.execute_call(conv, "c1", "clock", '{"city": "Rome", "tz": "CET"}')
