"""The turn discipline of chatledger.store.turns, on every backend."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from chatledger.store import ConversationBusy, Store, TurnGate, ValidationError
from chatledger.store.turns import TurnClaimed, turn_stream_id


class Clock:
    """A settable epoch clock."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_finished_request_is_answered_from_its_record(store: Store) -> None:
    """A request that completed is answered with its recorded outcome: no turn is claimed again."""
    conv = store.start_conversation()
    gate = TurnGate(store)
    first = gate.enter(conv, "req-1")
    assert first.turn is not None and first.recorded is None
    assert first.turn.complete({"answer": 42}) == {"answer": 42}
    version = store.recorder.get_head(turn_stream_id(conv)).version  # type: ignore[union-attr]
    for _ in range(3):
        again = gate.enter(conv, "req-1")
        assert again.turn is None and again.recorded == {"answer": 42}
    assert store.recorder.get_head(turn_stream_id(conv)).version == version  # type: ignore[union-attr]


def test_a_second_request_gets_conversation_busy_after_its_bounded_wait(store: Store) -> None:
    """A different request that finds the turn held waits at most wait_seconds, then gets ConversationBusy."""
    conv = store.start_conversation()
    gate = TurnGate(store, lease_seconds=30)
    held = gate.enter(conv, "req-1").turn
    assert held is not None
    with pytest.raises(ConversationBusy) as caught:
        gate.enter(conv, "req-2", wait_seconds=0)
    assert caught.value.holder == "req-1" and caught.value.request_id == "req-2"
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 30
    with pytest.raises(ConversationBusy):
        gate.enter(conv, "req-1", wait_seconds=0)  # a duplicate of the running request waits too


def test_a_waiting_request_runs_after_the_first_completes(store: Store) -> None:
    """A request waiting behind another is admitted as soon as the other releases its turn."""
    conv = store.start_conversation()
    gate = TurnGate(store, poll_seconds=0.01)
    held = gate.enter(conv, "req-1").turn
    assert held is not None
    admitted: list[object] = []
    started = threading.Event()

    def second() -> None:
        started.set()
        admitted.append(gate.enter(conv, "req-2", wait_seconds=60))

    thread = threading.Thread(target=second)
    thread.start()
    started.wait(10)
    assert not admitted
    held.complete({"ok": True})
    thread.join(60)
    assert admitted and admitted[0].turn is not None  # type: ignore[attr-defined]


def test_a_failed_request_releases_its_turn_at_once(store: Store) -> None:
    """A released (failed) request frees the turn immediately and may be run again by its retry."""
    conv = store.start_conversation()
    gate = TurnGate(store)
    held = gate.enter(conv, "req-1").turn
    assert held is not None
    held.release()
    retry = gate.enter(conv, "req-1", wait_seconds=0)
    assert retry.turn is not None and retry.recorded is None


def test_an_expired_lease_is_taken_over_and_the_first_outcome_wins(store: Store) -> None:
    """A holder that stops renewing loses the turn when its lease expires; the first outcome recorded stands."""
    conv = store.start_conversation()
    clock = Clock()
    gate = TurnGate(store, lease_seconds=30, clock=clock)
    stale = gate.enter(conv, "req-1").turn
    assert stale is not None
    clock.now += 29
    with pytest.raises(ConversationBusy):
        gate.enter(conv, "req-1", wait_seconds=0)
    clock.now += 2
    taker = gate.enter(conv, "req-1", wait_seconds=0).turn
    assert taker is not None and taker.takeover_of == "req-1"
    claims = [e for e in store.stream_events(turn_stream_id(conv)) if isinstance(e, TurnClaimed)]
    assert [c.takeover_of for c in claims] == [None, "req-1"]
    assert taker.complete({"by": "taker"}) == {"by": "taker"}
    assert stale.complete({"by": "stale"}) == {"by": "taker"}
    assert gate.enter(conv, "req-1").recorded == {"by": "taker"}
    assert gate.enter(conv, "req-2", wait_seconds=0).turn is not None  # the stale holder released nothing


def test_renewal_keeps_the_turn_and_a_lost_lease_is_reported(store: Store) -> None:
    """Renewing moves the deadline; renewing a lease taken over raises LeaseLost."""
    from chatledger.store import LeaseLost

    conv = store.start_conversation()
    clock = Clock()
    gate = TurnGate(store, lease_seconds=30, clock=clock)
    turn = gate.enter(conv, "req-1").turn
    assert turn is not None
    clock.now += 25
    turn.renew()
    clock.now += 25
    with pytest.raises(ConversationBusy):
        gate.enter(conv, "req-2", wait_seconds=0)
    clock.now += 10
    assert gate.enter(conv, "req-2", wait_seconds=0).turn is not None
    with pytest.raises(LeaseLost):
        turn.renew()


def test_concurrent_claims_admit_exactly_one(make_store: Callable[..., Store]) -> None:
    """Of many threads (each with its own store) entering one request at once, one runs; the rest get its outcome."""
    first = make_store()
    conv = first.start_conversation()
    runs: list[str] = []
    answers: list[object] = []
    barrier = threading.Barrier(6)

    def deliver(i: int) -> None:
        gate = TurnGate(make_store(), poll_seconds=0.01)
        barrier.wait(30)
        admission = gate.enter(conv, "req-1", wait_seconds=60)
        if admission.turn is not None:
            runs.append(f"run-{i}")
            answers.append(admission.turn.complete({"run": i}))
        else:
            answers.append(admission.recorded)

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(runs) == 1
    winner = int(runs[0].split("-")[1])
    assert answers == [{"run": winner}] * 6


def test_bad_ids_are_refused_and_write_nothing(store: Store) -> None:
    """A malformed request id is a ValidationError naming it; the conversation is unchanged."""
    conv = store.start_conversation()
    gate = TurnGate(store)
    version = store.version(conv)
    for bad in ("", "a\x1fb", 7, "x" * 600):
        with pytest.raises(ValidationError) as caught:
            gate.enter(conv, bad)  # type: ignore[arg-type]
        assert caught.value.field == "request_id"
    assert store.version(conv) == version
    assert store.recorder.get_head(turn_stream_id(conv)) is None
    with pytest.raises(ValidationError):
        TurnGate(store, lease_seconds=0)
