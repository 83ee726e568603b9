"""The global log's contract (made explicit by the PostgreSQL backend), run on every backend.

Positions are unique; readers continue after the position of the last event they saw
(never comparing positions), and a tailing reader never skips or repeats an event.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from chatledger.store import Store


def test_reader_tailing_concurrent_writers_sees_each_event_once(make_store: Callable[..., Store]) -> None:
    """While four threads append to their own conversations, a tailing reader sees every event once."""
    reader = make_store()
    convs = [reader.start_conversation(f"c{n}") for n in range(4)]
    done = threading.Event()

    def write(conv: str) -> None:
        s = make_store()
        for i in range(15):
            s.append(conv, [{"role": "user", "content": f"{conv}-{i}"}])

    threads = [threading.Thread(target=write, args=(c,)) for c in convs]
    for t in threads:
        t.start()
    waiter = threading.Thread(target=lambda: ([t.join() for t in threads], done.set()))
    waiter.start()
    seen, after = [], 0
    while True:
        finished = done.is_set()
        page = reader.read_all(after=after, limit=9)
        seen += page
        if page:
            after = page[-1].position
        elif finished:
            break
    waiter.join()
    ids = [e.event_id for e in seen]
    assert len(ids) == len(set(ids)) == 4 + 4 * 15
    assert ids == [e.event_id for e in reader.read_all()]
    for conv in convs:
        assert [e.version for e in seen if e.conversation_id == conv] == list(range(1, 17))


def test_last_position_is_where_the_log_ends(store: Store) -> None:
    """Reading after last_position() returns nothing; after it moves, exactly the new events."""
    assert store.last_position() == 0
    conv = store.start_conversation(messages=[{"role": "user", "content": "hi"}])
    end = store.last_position()
    assert end == store.read_all()[-1].position
    assert store.read_all(after=end) == []
    store.append(conv, [{"role": "user", "content": "again"}])
    assert [e.version for e in store.read_all(after=end)] == [3]


def test_tenant_reads_continue_after_their_own_positions(make_store: Callable[..., Store]) -> None:
    """Two tenants interleave appends; each one's paged read returns only its events, each once."""
    a, b = make_store(tenant="a"), make_store(tenant="b")
    ca, cb = a.start_conversation(), b.start_conversation()
    for i in range(5):
        a.append(ca, [{"role": "user", "content": f"a{i}"}])
        b.append(cb, [{"role": "user", "content": f"b{i}"}])
    pages, after = [], 0
    while page := a.read_all(after=after, limit=2):
        pages += page
        after = page[-1].position
    assert [e.tenant for e in pages] == ["a"] * 6
    assert [e.event_id for e in pages] == [e.event_id for e in a.iter_all(batch=4)]
