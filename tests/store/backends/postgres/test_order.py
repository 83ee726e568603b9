"""Global order on PostgreSQL: no global lock, and readers never skip an event that commits late."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from chatledger.store import MessageAppended
from chatledger.store.backends.postgres import PostgresBackend
from chatledger.store.handle import Draft, Store


def _msg(text: str) -> Draft:
    return Draft(MessageAppended, {"message_id": text, "message": {"role": "user", "content": text}}, key=text)


def _contents(events: list[object]) -> list[str]:
    return [e.message["content"] for e in events if isinstance(e, MessageAppended)]


@pytest.fixture
def stores(postgres_url: str) -> Iterator[tuple[Store, Store, Store]]:
    """Two writers and a reader, each on its own recorder (own pool) over one schema."""
    opened = [Store(PostgresBackend.from_url(postgres_url, read_wait=0.2)) for _ in range(3)]
    opened[0].start_conversation("conv-a")
    opened[0].start_conversation("conv-b")
    yield opened[0], opened[1], opened[2]
    for s in opened:
        s.close()


def _in_thread(fn: object) -> bool:
    """Run ``fn`` in a thread; whether it finished within 10 s."""
    done = threading.Event()

    def run() -> None:
        fn()  # type: ignore[operator]
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    return done.is_set()


def test_reader_never_skips_an_event_that_commits_late(stores: tuple[Store, Store, Store]) -> None:
    """A inserts first, B inserts and commits, a reader reads, A commits: the reader then sees A, then B."""
    a, b, reader = stores
    after = reader.read_all()[-1].position
    seen = []
    with a.transaction() as wa:
        (event_a,) = wa.append("conv-a", [_msg("from A")])
        assert _in_thread(lambda: b.append("conv-b", [{"role": "user", "content": "from B"}]))
        page = reader.read_all(after=after)
        assert page == [], "B's event showed before A's, which commits later"
        seen += page
    page = reader.read_all(after=after)
    seen += page
    assert _contents(seen) == ["from A", "from B"]
    assert seen[0].event_id == event_a.event_id
    assert seen[0].position < seen[1].position


def test_positions_increase_in_the_order_readers_see_events(stores: tuple[Store, Store, Store]) -> None:
    """B locks its conversation first and commits last, A appends and commits in between: a reader
    sees nothing past B's position until B commits, then every event with increasing positions, so a
    consumer that keeps only the highest position seen misses nothing."""
    a, b, reader = stores
    start = reader.last_position()
    with b.transaction() as wb:
        assert wb.head("conv-b") is not None  # B draws its position here
        assert _in_thread(lambda: a.append("conv-a", [{"role": "user", "content": "from A"}]))
        assert reader.read_all(after=start) == [], "A's event showed while B still held a lower position"
        assert reader.last_position() == start
        wb.append("conv-b", [_msg("B1"), _msg("B2")])
    log = reader.read_all(after=start)
    assert sorted(_contents(log)) == ["B1", "B2", "from A"]
    positions = [e.position for e in log]
    assert positions == sorted(positions), f"positions read back as {positions}"
    highest = start
    seen = []
    while page := reader.read_all(after=highest, limit=1):
        seen += page
        highest = max(highest, page[0].position)
    assert [e.event_id for e in seen] == [e.event_id for e in log]
    assert reader.last_position() == positions[-1]


def test_appends_to_other_conversations_do_not_wait_for_an_open_transaction(
    stores: tuple[Store, Store, Store],
) -> None:
    """A writer holding one conversation blocks only that conversation, never the others."""
    a, b, _ = stores
    blocked_done = threading.Event()
    with a.transaction() as wa:
        wa.append("conv-a", [_msg("held")])
        assert _in_thread(lambda: b.append("conv-b", [{"role": "user", "content": "free"}]))
        blocked = threading.Thread(
            target=lambda: (b.append("conv-a", [{"role": "user", "content": "queued"}]), blocked_done.set()),
            daemon=True,
        )
        blocked.start()
        blocked.join(0.5)
        assert not blocked_done.is_set(), "a second writer to the same conversation did not wait"
    blocked.join(10)
    assert blocked_done.is_set()
    assert _contents(a.events("conv-a")) == ["held", "queued"]
