"""The projection runner: exactly-once batches, catch-up, rebuild, crashes and rival runners."""

from __future__ import annotations

import signal
import time
from typing import Any

from chatledger.projections import (
    ConversationIndex,
    MessageSearch,
    ProjectionRunner,
    conversation_index,
    projection_states,
    search,
)
from chatledger.projections.runner import read_models
from chatledger.store import Store, open_store

from .conftest import fill, worker
from .worker import COUNTS, SEEN, Counting


def dump(store: Store, *tables: Any) -> dict[str, list[dict[str, Any]]]:
    """Every row of the given read-model tables, sorted, for comparison."""
    models = read_models(store)
    return {t.name: sorted(models.rows(t, {}), key=lambda r: [str(r[c]) for c in t.pk]) for t in tables}


def test_catch_up_applies_each_event_once(store: Store) -> None:
    """Running the runner again, or after more appends, applies only the new events."""
    fill(store, conversations=3, messages=4)
    runner = ProjectionRunner(store, [Counting()], batch_size=4)
    assert runner.catch_up() == 15
    assert runner.catch_up() == 0
    store.append("c0", [{"role": "user", "content": "again"}])
    assert runner.catch_up() == 1
    rows = {r["conversation_id"]: r["events"] for r in dump(store, COUNTS)["test_counts"]}
    assert rows == {"c0": 6, "c1": 5, "c2": 5}
    [state] = runner.states()
    assert state.events == 16
    assert state.position == store.last_position()


def test_projection_added_late_catches_up(store: Store) -> None:
    """A projection that joins an existing log starts from zero and reaches the others' position."""
    fill(store, conversations=4, messages=3)
    ProjectionRunner(store, [ConversationIndex()]).catch_up()
    fill(store, conversations=2, messages=2, prefix="late")
    runner = ProjectionRunner(store, [ConversationIndex(), MessageSearch()], batch_size=5)
    assert runner.catch_up() == 22 + 6  # search reads all 22 events, the index only the 6 new ones
    positions = {s.name: s.position for s in projection_states(store)}
    assert positions["search"] == positions["conversations"] == store.last_position()
    assert len(search(store, "refund policy", limit=100, catch_up=False)) == 4 * 3 + 2 * 2


def test_incremental_equals_rebuild(store: Store) -> None:
    """Tables built batch by batch between appends equal the tables of a rebuild from zero."""
    runner = ProjectionRunner(store, [ConversationIndex(), MessageSearch(), Counting()], batch_size=3)
    for round_ in range(3):
        fill(store, conversations=2, messages=3 + round_, prefix=f"r{round_}-")
        store.append(f"r{round_}-0", [{"role": "user", "content": "more"}])
        runner.catch_up()
    tables = [t for p in runner.projections for t in p.tables]
    before = dump(store, *tables)
    assert runner.rebuild() == store.last_position()
    assert dump(store, *tables) == before
    entries = conversation_index(store, order_by="conversation_id", desc=False)
    assert [(e.conversation_id, e.messages, e.status) for e in entries][:2] == [
        ("r0-0", 4, "awaiting_reply"),
        ("r0-1", 3, "awaiting_reply"),
    ]


def test_index_rows_are_scoped_to_the_tenant(make_store: Any) -> None:
    """The index and search of one tenant never show another tenant's conversations."""
    acme, other = make_store("acme"), make_store("other")
    fill(acme, conversations=2, messages=2, prefix="a")
    fill(other, conversations=1, messages=2, prefix="o")
    assert {e.conversation_id for e in conversation_index(acme)} == {"a0", "a1"}
    assert {h.conversation_id for h in search(other, "refund")} == {"o0"}


def test_runner_killed_mid_batch_resumes_to_the_rebuilt_state(db_url: str) -> None:
    """kill -9 during a batch loses that batch only; a restart ends where a fresh rebuild does."""
    store = open_store(db_url)
    total = fill(store, conversations=20, messages=19)
    proc = worker("run", db_url, "20", "0.004")
    try:
        deadline = time.monotonic() + 20
        position = 0
        while position < 60 and time.monotonic() < deadline:
            states = {s.name: s for s in projection_states(store)}
            position = states["counting"].events if "counting" in states else 0
            time.sleep(0.02)
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    [state] = [s for s in projection_states(store) if s.name == "counting"]
    assert 0 < state.events < total  # killed part-way (PostgreSQL may cut a batch short: no modulo check)
    seen = dump(store, SEEN)["test_seen"]
    assert len(seen) == state.events
    runner = ProjectionRunner(store, [Counting()], batch_size=50)
    assert runner.catch_up() == total - state.events
    resumed = dump(store, COUNTS, SEEN)
    runner.rebuild()
    assert dump(store, COUNTS, SEEN) == resumed
    assert sum(r["events"] for r in resumed["test_counts"]) == total
    store.close()


def test_two_runner_processes_never_double_apply(db_url: str) -> None:
    """Two processes running one projection together apply every event exactly once between them."""
    store = open_store(db_url)
    total = fill(store, conversations=30, messages=9)
    procs = [worker("run", db_url, "10", "0.0005") for _ in range(2)]
    applied = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        applied.append(int(out.strip()))
    assert sum(applied) == total
    tables = dump(store, COUNTS, SEEN)
    assert len(tables["test_seen"]) == total
    assert sum(r["events"] for r in tables["test_counts"]) == total
    [state] = [s for s in projection_states(store) if s.name == "counting"]
    assert state.events == total
    store.close()
