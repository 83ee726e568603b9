"""Subscription leases on an injected clock: time passes only when the test says so."""

from __future__ import annotations

import time
from collections.abc import Callable

from chatledger.store import Store
from chatledger.store.clock import ManualClock
from chatledger.store.events import Event
from chatledger.store.subscriptions import subscribe


def _wait_until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_handler_running_for_many_leases_keeps_the_subscription(store: Store) -> None:
    """While a handler runs for ten times its 50 ms lease (on a manual clock), the consumer keeps renewing
    the lease: a second consumer trying meanwhile gets nothing, and each event is handled once."""
    clock = ManualClock()
    lease = 0.05
    store.start_conversation(messages=[{"role": "user", "content": "one"}])
    total = len(list(store.read_all()))
    handled: list[str] = []
    second_got: list[int] = []

    def rival(event: Event) -> None:
        handled.append(f"rival {event.event_id}")

    other = subscribe(store, "clocked", rival, lease_seconds=lease, worker_id="rival", clock=clock)

    def slow(event: Event) -> None:
        handled.append(event.event_id)
        for _ in range(10):
            state = first.state()
            assert state is not None and state.lease_until is not None
            before = state.lease_until
            clock.advance(lease)  # a whole lease passes while the handler runs
            _wait_until(lambda before=before: (first.state().lease_until or 0.0) > before)  # type: ignore[union-attr,misc]
            second_got.append(other.run_once())

    first = subscribe(store, "clocked", slow, lease_seconds=lease, worker_id="first", clock=clock)
    assert first.run_once() == total
    assert second_got == [0] * (10 * total)
    assert len(handled) == total and not any(h.startswith("rival") for h in handled)
    state = first.state()
    assert state is not None and state.delivered == total and state.owner is None
