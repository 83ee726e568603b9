"""Lone appends on PostgreSQL: one statement against the head the recorder last saw.

``Store.append`` is sent as a single autocommit statement built on the cached head; when that
guess is wrong (another writer moved the head, a duplicate or reused id, a stale
``expected_version``) nothing is written and the append is decided again in a locked
transaction. These tests make the guess wrong on purpose.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from chatledger.store import ConcurrencyError, ConflictError, open_store
from chatledger.store.handle import Store

from .helpers import DroppingProxy


def _msg(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


@pytest.fixture
def two(postgres_url: str) -> Iterator[tuple[Store, Store]]:
    """Two stores (two recorders, two head caches) on one schema."""
    a, b = open_store(postgres_url, pool_max=2), open_store(postgres_url, pool_max=2)
    yield a, b
    a.close()
    b.close()


def test_a_head_moved_by_another_writer_is_appended_after(two: tuple[Store, Store]) -> None:
    """Two stores take turns on one conversation, each with a stale cached head every time: every
    message lands once, in order, on an intact hash chain."""
    a, b = two
    conv = a.start_conversation()
    for i in range(10):
        (a if i % 2 else b).append(conv, [_msg(f"m{i}")])
    assert [m["content"] for m in a.messages(conv)] == [f"m{i}" for i in range(10)]
    assert [e.version for e in a.events(conv)] == list(range(1, 12))
    assert a.verify(conv).ok


def test_a_retried_message_id_returns_the_stored_event(two: tuple[Store, Store]) -> None:
    """Re-sending a message id (from the same store and from another) returns the stored event and
    writes nothing; reusing it for other content is a ConflictError that writes nothing."""
    a, b = two
    conv = a.start_conversation()
    (first,) = a.append(conv, [_msg("once")], message_ids=["m1"])
    (again,) = a.append(conv, [_msg("once")], message_ids=["m1"])
    (other,) = b.append(conv, [_msg("once")], message_ids=["m1"])
    assert again.event_id == other.event_id == first.event_id
    with pytest.raises(ConflictError):
        a.append(conv, [_msg("different")], message_ids=["m1"])
    assert a.version(conv) == 2
    (second,) = a.append(conv, [_msg("next")], message_ids=["m2"])
    assert second.version == 3
    assert a.verify(conv).ok


def test_a_batch_lands_in_order_and_a_partly_stored_batch_adds_only_the_new(two: tuple[Store, Store]) -> None:
    """A three-message batch on a cached head gets consecutive versions and positions in log order;
    re-sending it with one new message stores only that one and returns the stored three."""
    a, _ = two
    conv = a.start_conversation()
    batch = a.append(conv, [_msg("x"), _msg("y"), _msg("z")], message_ids=["x", "y", "z"])
    assert [e.version for e in batch] == [2, 3, 4]
    assert [e.position for e in batch] == sorted(e.position for e in batch)
    assert [e.event_id for e in a.read_all()][-3:] == [e.event_id for e in batch]
    again = a.append(conv, [_msg("x"), _msg("y"), _msg("z"), _msg("w")], message_ids=["x", "y", "z", "w"])
    assert [e.event_id for e in again[:3]] == [e.event_id for e in batch]
    assert again[3].version == 5
    assert [m["content"] for m in a.messages(conv)] == ["x", "y", "z", "w"]
    assert a.verify(conv).ok


def test_expected_version_is_decided_on_the_current_head(two: tuple[Store, Store]) -> None:
    """A store whose cached head is stale still accepts the current expected_version and refuses
    a stale one with ConcurrencyError naming the real version."""
    a, b = two
    conv = a.start_conversation()
    a.append(conv, [_msg("a1")])
    b.append(conv, [_msg("b1")])
    (event,) = a.append(conv, [_msg("a2")], expected_version=3)
    assert event.version == 4
    b.append(conv, [_msg("b2")])
    with pytest.raises(ConcurrencyError) as caught:
        a.append(conv, [_msg("late")], expected_version=4)
    assert caught.value.actual == 5
    assert [m["content"] for m in a.messages(conv)] == ["a1", "b1", "a2", "b2"]


def test_racing_writers_on_one_conversation_lose_nothing(postgres_url: str) -> None:
    """Four threads, each with its own store, append 30 messages each to one conversation: all 120
    land once and the chain verifies."""
    stores = [open_store(postgres_url, pool_max=1) for _ in range(4)]
    try:
        conv = stores[0].start_conversation()
        errors: list[BaseException] = []

        def write(k: int) -> None:
            try:
                for i in range(30):
                    stores[k].append(conv, [_msg(f"{k}-{i}")])
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        contents = [m["content"] for m in stores[0].messages(conv)]
        assert sorted(contents) == sorted(f"{k}-{i}" for k in range(4) for i in range(30))
        for k in range(4):
            assert [c for c in contents if c.startswith(f"{k}-")] == [f"{k}-{i}" for i in range(30)]
        assert stores[0].verify(conv).ok
    finally:
        for s in stores:
            s.close()


@pytest.mark.parametrize("direction", ["request", "reply"])
def test_a_lost_append_statement_is_settled(proxied: tuple[Store, DroppingProxy], direction: str) -> None:
    """The connection dies carrying the append statement (before the server got it, or with its
    reply): the append returns normally and the message is stored exactly once."""
    store, proxy = proxied
    conv = store.start_conversation()
    store.append(conv, [_msg("warm")])  # the head is cached: the next append is one statement
    proxy.arm(direction)
    (event,) = store.append(conv, [_msg("lost")], message_ids=["m1"])
    assert event.version == 3
    assert [m["content"] for m in store.messages(conv)] == ["warm", "lost"]
    assert [e.event_id for e in store.events(conv)][-1] == event.event_id
