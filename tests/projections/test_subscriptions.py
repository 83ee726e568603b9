"""Durable subscriptions: resume after a restart, stop at a failing event, deliver across processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from chatledger.projections import SubscriptionStopped, subscribe
from chatledger.store import Event, Store, open_store
from chatledger.store.subscriptions import subscription_states

from .conftest import fill, worker


def test_subscription_resumes_from_its_position_after_a_restart(store: Store) -> None:
    """A new Subscription object with the same name continues after the last delivered event."""
    fill(store, conversations=2, messages=2)
    first: list[int] = []
    assert subscribe(store, "mailer", lambda e: first.append(e.position)).run_once() == 6
    store.append("c0", [{"role": "user", "content": "later"}])
    again: list[int] = []
    restarted = store.subscribe("mailer", lambda e: again.append(e.position))
    assert restarted.run_once() == 1
    assert again == [store.last_position()]
    assert first == [e.position for e in store.read_all()][:6]
    state = restarted.state()
    assert state is not None and state.delivered == 7 and state.status == "active"


def test_failing_handler_stops_the_subscription_at_that_event(store: Store) -> None:
    """A handler that raises stops there; the position, error and failed event stay visible until resumed."""
    fill(store, conversations=1, messages=4)
    positions = [e.position for e in store.read_all()]
    seen: list[int] = []

    def handler(event: Event) -> None:
        if event.position == positions[2] and len(seen) < 10:
            raise RuntimeError("smtp down")
        seen.append(event.position)

    sub = subscribe(store, "mailer", handler)
    with pytest.raises(SubscriptionStopped, match="smtp down") as info:
        sub.run_once()
    assert info.value.state.failed_position == positions[2]
    assert seen == positions[:2]
    with pytest.raises(SubscriptionStopped):
        sub.run_once()
    assert seen == positions[:2]
    [state] = subscription_states(store)
    assert (state.status, state.position, state.error) == ("stopped", positions[1], "RuntimeError: smtp down")
    seen.extend([0] * 10)
    assert sub.resume()
    assert sub.run_once() == 3
    assert seen[-3:] == positions[2:]


def test_resume_with_skip_passes_over_the_failed_event(store: Store) -> None:
    """resume(skip=True) moves past the failed event without delivering it."""
    fill(store, conversations=1, messages=2)
    positions = [e.position for e in store.read_all()]
    seen: list[int] = []

    def handler(event: Event) -> None:
        if event.position == positions[1]:
            raise ValueError("poison")
        seen.append(event.position)

    sub = subscribe(store, "poisoned", handler)
    with pytest.raises(SubscriptionStopped):
        sub.run_once()
    assert sub.resume(skip=True)
    assert sub.run_once() == 1
    assert seen == [positions[0], positions[2]]


def test_a_held_subscription_delivers_nothing_to_a_second_consumer(store: Store) -> None:
    """While one consumer holds the lease, another run of the same subscription delivers nothing."""
    fill(store, conversations=1, messages=2)
    inner: list[int] = []
    second = subscribe(store, "single", lambda e: inner.append(second.run_once()))
    outer = subscribe(store, "single", lambda e: inner.append(second.run_once()))
    assert outer.run_once() == 3
    assert inner == [0, 0, 0]


def test_handler_in_one_process_fires_for_appends_from_another(db_url: str, tmp_path: Path) -> None:
    """A subscription running in a subprocess receives, in order, the events this process appends."""
    out = tmp_path / "delivered.txt"
    out.touch()
    store = open_store(db_url)
    proc = worker("follow", db_url, "cross", str(out))
    try:
        fill(store, conversations=3, messages=3)
        expected = [str(e.position) for e in store.read_all()]
        deadline = time.monotonic() + 20
        while out.read_text().split() != expected and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.05)
        assert out.read_text().split() == expected
    finally:
        proc.kill()
        proc.wait(10)
    store.close()
